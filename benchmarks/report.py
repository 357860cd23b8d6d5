"""Tables and figures from run records. The report never trains.

``write_report(results_dir)`` reads every record under ``results_dir/runs``,
averages each operating point over its seeds and writes into ``results_dir``:

- ``table.md``, ``table.csv`` and ``table.tex``: one row per model, method and
  operating point, one table per dataset, model and device, with published
  results beside ours where a paper ran the same network on the same dataset;
- ``at_budget.md`` and ``at_budget.csv``: every method's error at each shared
  compression target;
- ``figures/*.png`` and ``figures/*.pdf``, drawn by ``benchmarks.figures``.

A record that cannot be read, or that lacks a field the report needs, is
skipped with a warning naming its file. Everything else is still written.
Means and standard deviations are over seeds. The standard deviation is the
sample one (n - 1 in the denominator), so it is left empty for one seed.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from benchmarks.store import ResultsStore, atomic_write_text

logger = logging.getLogger(__name__)

PUBLISHED_CSV = Path(__file__).parent / "reference" / "published.csv"
PUBLISHED_COLUMNS = [
    "source", "table", "network", "dataset", "method", "error_pct",
    "architecture", "params_fraction", "flops_fraction", "note",
]

# The dataset a paper reports on, for each of our dataset names. mnist5k is a
# 5,000-digit subset of MNIST: same digits, far fewer of them.
DATASET_FAMILY = {
    "mnist5k": "MNIST",
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}
SUBSET_DATASETS = {"mnist5k": "a 5,000-digit subset of MNIST"}

# The registered model that each network name in published.csv matches.
NETWORK_MODEL = {"LeNet-300-100": "lenet300100", "LeNet-5": "lenet5", "VGG-16": "vgg16", "VGGNet": "vgg16"}

# Presentation order of methods. Methods not listed follow in name order.
METHOD_ORDER = ("dense", "vibnet", "group_lasso", "slimming", "magnitude")

NOT_APPLICABLE = "-"
MASK_MARK = "†"
MASK_NOTE = (
    f"{MASK_MARK} Masked weights (torch.nn.utils.prune) keep the dense tensors, so this latency shows "
    "no speed-up; the non-zero counts are what sparse storage and sparse kernels would need."
)
FLOPS_NOTE = (
    "FLOPs are fvcore's count for one input, and fvcore counts 1 multiply-add = 1 flop. "
    "For masked weights, params pruned % and FLOPs reduction use the non-zero counts."
)
DIRECTION_NOTE = (
    "Lower is better for error, params, non-zero params, FLOPs, non-zero FLOPs, activation memory, peak memory "
    "and latency. "
    "Higher is better for params pruned % and FLOPs reduction. "
    "Params, FLOPs, widths, memory and file sizes are means over a cell's seeds (widths rounded), so with "
    "several seeds they need not reproduce each other exactly; the records hold each seed's values. "
    "'may prune' lists what a method can remove, not what it removed."
)
POINT_NOTE = (
    "Point: natural is the method's own threshold; name=value is the natural point of that strength in a sweep; "
    "flops <= f and params <= f are prunings to a fraction f of the dense network's FLOPs or parameters."
)

# Fields every record needs, and fields each status adds, as dotted paths.
REQUIRED_FIELDS = (
    "run_id", "status", "config.model", "config.method", "config.dataset", "config.seed",
    "config.params", "config.target", "config.ranking", "config.budget.dense_epochs",
    "config.budget.sparsify_epochs", "config.budget.finetune_epochs", "config.budget.batch_size",
    "config.budget.optimizer", "environment.device",
)
REQUIRED_BY_STATUS = {
    "ok": (
        "method_info.prunes", "method_info.structured", "metrics.test_error_pct", "metrics.params",
        "metrics.params_nonzero", "metrics.dense_params", "metrics.params_fraction", "metrics.flops_fvcore",
        "metrics.flops_nonzero", "metrics.dense_flops_fvcore", "metrics.flops_fraction",
        "metrics.activation_bytes", "metrics.latency", "metrics.widths", "metrics.dense_widths",
    ),
    "failed": ("error.phase",),
    "unreachable": (),
}
NULLABLE_FIELDS = {"config.target"}


# Published results ----------------------------------------------------------


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    """Return the published reference results (columns ``PUBLISHED_COLUMNS``, plus ``error_pct_text``).

    ``error_pct_text`` is the error as the source prints it (``0.80``, not
    ``0.8``). A missing or malformed file gives an empty frame and a warning,
    so the report still shows our own results.
    """
    try:
        published = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        logger.warning("failed to read published results %s (%s); the tables show no published rows", path, error)
        return pd.DataFrame(columns=PUBLISHED_COLUMNS)

    missing = [column for column in PUBLISHED_COLUMNS if column not in published.columns]
    if missing:
        logger.warning("published results %s lack the columns %s; the tables show no published rows", path, ", ".join(missing))
        return pd.DataFrame(columns=PUBLISHED_COLUMNS)

    published["error_pct_text"] = published["error_pct"]
    for column in ("error_pct", "params_fraction", "flops_fraction"):
        raw = published[column].str.strip()
        published[column] = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        invalid = published[column].isna() & raw.ne("")
        if invalid.any():
            logger.warning("published results %s: %s is not a number in rows %s; those cells are left empty",
                           path, column, ", ".join(str(i + 2) for i in published.index[invalid]))
    return published


def match_published(published: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    """Return the published rows of the same network and dataset as our ``model`` on ``dataset``.

    Full MNIST results match both ``mnist`` and ``mnist5k``. The returned
    frame has a ``comparability`` column that states when the data differ.

    Example:
        >>> rows = match_published(load_published(), "mnist5k", "lenet5")
        >>> sorted(rows["method"])
        ['dense', 'magnitude']
    """
    family = DATASET_FAMILY.get(dataset)
    networks = [name for name, registered in NETWORK_MODEL.items() if registered == model]
    rows = published[published["dataset"].eq(family) & published["network"].isin(networks)].copy()

    subset = SUBSET_DATASETS.get(dataset)
    if subset:
        rows["comparability"] = (
            f"on full {family}; this suite uses {subset}, so the numbers are not comparable digit for digit"
        )
    else:
        rows["comparability"] = ""
    return rows


# Records --------------------------------------------------------------------


def _field(record: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def missing_fields(record: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """Return the dotted paths of ``fields`` that ``record`` lacks, or that are null where null is invalid.

    Example:
        >>> missing_fields({"config": {"model": None, "target": None}}, ("config.model", "config.target", "status"))
        ['config.model', 'status']
    """
    missing = []
    for dotted in fields:
        present, value = _field(record, dotted)
        if not present or (value is None and dotted not in NULLABLE_FIELDS):
            missing.append(dotted)
    return missing


def site_order(names: list[str]) -> list[str]:
    """Return site names input first, then in natural order (``fc2`` before ``fc10``).

    Records store the network order in ``metrics.sites``, which the report
    uses where present. This order is the fallback for records without it,
    and it matches the network for the built-in models, whose layer names
    count up (conv1, conv2, fc1).

    Example:
        >>> site_order(["fc10", "input", "fc2", "conv1"])
        ['input', 'conv1', 'fc2', 'fc10']
    """

    def key(name: str) -> tuple:
        parts = re.split(r"(\d+)", name)
        return (name != "input", [int(part) if part.isdigit() else part for part in parts])

    return sorted(names, key=key)


def _ordered_widths(widths: dict[str, Any], order: list[str] | None = None) -> dict[str, int]:
    names = [name for name in order if name in widths] if order else site_order(list(widths))
    return {name: int(widths[name]) for name in names}


def _optional_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _metric_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    latency = {int(timing["batch_size"]): float(timing["median_ms"]) for timing in metrics["latency"]}
    order = metrics.get("sites")
    dense_widths = _ordered_widths(metrics["dense_widths"], order)
    # A masked (unstructured) network keeps every unit, and the runner leaves
    # its widths empty, so its widths are the dense ones.
    widths = _ordered_widths(metrics["widths"], order) if metrics["widths"] else dense_widths
    return {
        "error_pct": float(metrics["test_error_pct"]),
        "val_error_pct": float(metrics.get("val_error_pct", math.nan)),
        "params": int(metrics["params"]),
        "params_nonzero": int(metrics["params_nonzero"]),
        "dense_params": int(metrics["dense_params"]),
        "params_fraction": float(metrics["params_fraction"]),
        "flops_fvcore": int(metrics["flops_fvcore"]),
        "flops_nonzero": int(metrics["flops_nonzero"]),
        "dense_flops_fvcore": int(metrics["dense_flops_fvcore"]),
        "flops_fraction": float(metrics["flops_fraction"]),
        "activation_bytes": int(metrics["activation_bytes"]),
        # File sizes came later than the other metrics; older records lack them.
        "file_bytes": _optional_float(metrics.get("file_bytes")),
        "dense_file_bytes": _optional_float(metrics.get("dense_file_bytes")),
        "sparse_file_bytes": _optional_float(metrics.get("sparse_file_bytes")),
        "latency_ms": latency,
        "peak_memory_bytes": {int(size): value for size, value in (metrics.get("peak_memory_bytes") or {}).items()},
        "widths": widths,
        "dense_widths": dense_widths,
    }


def _run_row(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    config = record["config"]
    target = config["target"]
    info = record.get("method_info") or {}
    status = record["status"]
    params = dict(config["params"])
    strength_param = info.get("strength")

    row: dict[str, Any] = {
        "file": path.name,
        "run_id": record["run_id"],
        "status": status,
        "dataset": config["dataset"],
        "model": config["model"],
        "method": config["method"],
        "seed": int(config["seed"]),
        "method_params": params,
        "params_key": json.dumps(params, sort_keys=True),
        "target_metric": target["metric"] if target else None,
        "target_fraction": float(target["fraction"]) if target else math.nan,
        "ranking": config["ranking"],
        "budget": config["budget"],
        "budget_key": json.dumps(config["budget"], sort_keys=True),
        "device": str(record["environment"]["device"]),
        "prunes": info.get("prunes"),
        "structured": info.get("structured"),
        "strength_param": strength_param,
        "strength": params.get(strength_param) if strength_param else None,
        "failed_phase": record["error"]["phase"] if status == "failed" else None,
        "curves": list(record.get("curves") or []),
    }
    if status == "ok":
        row.update(_metric_fields(record["metrics"]))
    return row


def _usable_row(path: Path, record: Any) -> dict[str, Any] | None:
    """Return the table row of one record, or None (with a warning naming ``path``) when it is unusable."""
    if not isinstance(record, dict):
        logger.warning("skipping record %s: it is a JSON %s, not an object", path, type(record).__name__)
        return None

    missing = missing_fields(record, REQUIRED_FIELDS)
    if missing:
        logger.warning("skipping record %s: missing fields %s", path, ", ".join(missing))
        return None

    status = record["status"]
    if status not in REQUIRED_BY_STATUS:
        logger.warning("skipping record %s: unknown status %r; expected one of %s", path, status, ", ".join(REQUIRED_BY_STATUS))
        return None
    missing = missing_fields(record, REQUIRED_BY_STATUS[status])
    if missing:
        logger.warning("skipping record %s: missing fields %s for status %s", path, ", ".join(missing), status)
        return None

    try:
        return _run_row(path, record)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        logger.warning("skipping record %s: malformed field (%s: %s)", path, type(error).__name__, error)
        return None


def load_runs(results_dir: Path) -> pd.DataFrame:
    """Return one row per usable record in ``results_dir/runs``, failed and unreachable runs included.

    Metrics are empty (NaN) for runs that did not finish. The columns
    ``setting`` and ``point`` label the operating point: ``setting`` names the
    method parameters that vary within a model and method (a strength sweep),
    and ``point`` is ``natural``, the setting, or the target (``flops <= 0.25``).
    """
    rows = []
    for path, record in ResultsStore(Path(results_dir)).records():
        row = _usable_row(path, record)
        if row is not None:
            rows.append(row)
    runs = pd.DataFrame(rows)
    if runs.empty:
        return runs

    # A run that failed while building its method has no method_info, so it
    # is taken from another record of the same method.
    for column in ("prunes", "structured", "strength_param"):
        runs[column] = runs.groupby("method")[column].transform(lambda values: values.ffill().bfill())
    runs["strength"] = [
        params.get(name) if isinstance(name, str) else None
        for params, name in zip(runs["method_params"], runs["strength_param"])
    ]
    runs["setting"] = _setting_labels(runs)
    runs["point"] = [_point_label(m, f, s) for m, f, s in zip(runs["target_metric"], runs["target_fraction"], runs["setting"])]
    return runs


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _setting_labels(runs: pd.DataFrame) -> pd.Series:
    """Label each run by the method parameters that differ between runs of its model and method."""
    labels = pd.Series("", index=runs.index, dtype=object)
    for _, group in runs.groupby(["dataset", "model", "method"]):
        keys = sorted({key for params in group["method_params"] for key in params})
        varying = [key for key in keys if len({_format_value(p.get(key)) for p in group["method_params"]}) > 1]
        strength = group["strength_param"].dropna()
        if not strength.empty and strength.iloc[0] in varying:
            varying.remove(strength.iloc[0])
            varying.insert(0, strength.iloc[0])
        for index, params in group["method_params"].items():
            labels[index] = ", ".join(f"{key}={_format_value(params.get(key))}" for key in varying)
    return labels


def _point_label(metric: str | None, fraction: float, setting: str) -> str:
    if metric is None or (isinstance(metric, float) and math.isnan(metric)):
        return setting or "natural"
    target = f"{metric} <= {fraction:g}"
    return f"{target}, {setting}" if setting else target


# Aggregation over seeds --------------------------------------------------------

GROUP_KEYS = ["dataset", "model", "device", "method", "params_key", "target_metric", "target_fraction"]
AGGREGATE_METRICS = [
    "error_pct_mean", "error_pct_std", "val_error_pct_mean", "val_error_pct_std", "params_fraction_mean",
    "params_fraction_std", "flops_fraction_mean", "flops_fraction_std", "params", "params_nonzero", "dense_params",
    "flops_fvcore", "flops_nonzero", "dense_flops_fvcore", "activation_bytes", "params_pruned_pct",
    "flops_reduction_x", "activation_kib", "file_kib", "dense_file_kib", "sparse_file_kib",
]


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return float(values.mean()), std


def _mean_widths(widths: pd.Series) -> tuple[dict[str, float], dict[str, float]]:
    frame = pd.DataFrame(list(widths))
    if frame.empty:
        return {}, {}
    # Columns follow the first record's widths, which are already in network order.
    std = frame.std(ddof=1) if len(frame) > 1 else frame.iloc[0] * math.nan
    return frame.mean().to_dict(), std.to_dict()


def _aggregate_group(group: pd.DataFrame, batch_sizes: list[int]) -> dict[str, Any]:
    first = group.iloc[0]
    ok = group[group["status"] == "ok"]
    failed = group[group["status"] == "failed"]
    unreachable = group[group["status"] == "unreachable"]

    point: dict[str, Any] = {key: first[key] for key in GROUP_KEYS}
    point.update({
        "setting": first["setting"], "point": first["point"], "prunes": first["prunes"],
        "structured": first["structured"], "strength_param": first["strength_param"], "strength": first["strength"],
        "ranking": first["ranking"], "n_seeds": len(ok), "seeds": sorted(ok["seed"].tolist()),
        "failed": sorted(zip(failed["seed"], failed["failed_phase"])),
        "unreachable_seeds": sorted(unreachable["seed"].tolist()),
    })
    if ok.empty:
        point["status"] = "failed" if not failed.empty else "unreachable"
        return point

    point["status"] = "ok"
    for column in ("error_pct", "val_error_pct", "params_fraction", "flops_fraction"):
        point[f"{column}_mean"], point[f"{column}_std"] = _mean_std(ok[column])
    for column in ("params", "params_nonzero", "dense_params", "flops_fvcore", "flops_nonzero",
                   "dense_flops_fvcore", "activation_bytes"):
        point[column] = float(ok[column].mean())
    point["params_pruned_pct"] = 100.0 * (1.0 - point["params_fraction_mean"])
    point["flops_reduction_x"] = 1.0 / point["flops_fraction_mean"] if point["flops_fraction_mean"] > 0 else math.inf
    point["activation_kib"] = point["activation_bytes"] / 1024.0
    for name in ("file", "dense_file", "sparse_file"):
        sizes = ok[f"{name}_bytes"].dropna() if f"{name}_bytes" in ok else pd.Series(dtype=float)
        point[f"{name}_kib"] = float(sizes.mean()) / 1024.0 if not sizes.empty else math.nan
    for batch_size in batch_sizes:
        medians = [latency.get(batch_size) for latency in ok["latency_ms"]]
        medians = [value for value in medians if value is not None]
        point[f"latency_b{batch_size}_median_ms"] = float(np.median(medians)) if medians else math.nan
        peaks = [peak.get(batch_size) for peak in ok["peak_memory_bytes"]]
        peaks = [value for value in peaks if value is not None]
        point[f"peak_memory_b{batch_size}_kib"] = float(np.median(peaks)) / 1024.0 if peaks else math.nan
    point["widths_mean"], point["widths_std"] = _mean_widths(ok["widths"])
    point["dense_widths"] = ok["dense_widths"].iloc[0]
    return point


def latency_batch_sizes(runs: pd.DataFrame) -> list[int]:
    """Return every batch size that some finished run was timed at, ascending."""
    if "latency_ms" not in runs:
        return []
    sizes = {size for latency in runs["latency_ms"].dropna() for size in latency}
    return sorted(sizes)


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def is_masked(row: pd.Series | dict) -> bool:
    """Return True for a run of a method that masks single weights (``method_info.structured`` is false)."""
    structured = row["structured"]
    return structured is not None and not pd.isna(structured) and not bool(structured)


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Return one row per operating point (dataset, model, device, method setting, target) over its seeds.

    ``n_seeds`` counts the finished seeds behind the numbers; ``status`` is
    ``ok`` when at least one seed finished, else ``failed`` or ``unreachable``.
    ``failed`` lists (seed, phase) pairs of failed seeds.
    """
    if runs.empty:
        return pd.DataFrame()
    batch_sizes = latency_batch_sizes(runs)
    points = [
        _aggregate_group(group, batch_sizes)
        for _, group in runs.groupby(GROUP_KEYS, dropna=False, sort=False)
    ]
    frame = pd.DataFrame(points)
    # Points where no seed finished have no metrics, and a suite of only such
    # points would otherwise lack the metric columns altogether.
    per_batch = [f"latency_b{size}_median_ms" for size in batch_sizes] + [f"peak_memory_b{size}_kib" for size in batch_sizes]
    for column in AGGREGATE_METRICS + per_batch:
        if column not in frame:
            frame[column] = math.nan
    for column in ("widths_mean", "widths_std", "dense_widths"):
        if column not in frame:
            frame[column] = [{} for _ in range(len(frame))]

    frame["_method_rank"] = [_method_rank(m) for m in frame["method"]]
    frame["_natural"] = frame["target_metric"].isna().map({True: 0, False: 1})
    frame["_target_fraction"] = -frame["target_fraction"].fillna(0.0)
    frame["_strength"] = [_as_number(s) for s in frame["strength"]]
    frame = frame.sort_values(
        ["dataset", "model", "device", "_method_rank", "_natural", "target_metric", "_target_fraction",
         "_strength", "setting"],
        na_position="first", kind="stable",
    )
    return frame.drop(columns=["_method_rank", "_natural", "_target_fraction", "_strength"]).reset_index(drop=True)


# Captions ----------------------------------------------------------------------


def _join(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def budget_caption(runs: pd.DataFrame) -> str:
    """Return the sentences that state the identical budget behind ``runs``.

    When records were made with different budgets, the caption lists each and
    warns that the comparison is not under one budget.
    """
    budgets = [json.loads(key) for key in runs["budget_key"].unique()]
    sentences = []
    if len(budgets) > 1:
        logger.warning("records use %d different training budgets; the tables mix them", len(budgets))
        sentences.append(f"Warning: these records use {len(budgets)} different training budgets.")
    for budget in budgets:
        optimizer = budget["optimizer"]
        limit = budget.get("max_batches_per_epoch")
        limit_text = f", each epoch cut to at most {limit} batches (smoke test)" if limit else ""
        sentences.append(
            f"Identical budget for every method: epochs per phase dense {budget['dense_epochs']}, "
            f"sparsify {budget['sparsify_epochs']}, finetune {budget['finetune_epochs']}{limit_text}; "
            f"batch size {budget['batch_size']}; optimizer {optimizer.get('name')} with lr {optimizer.get('lr')}, "
            f"{optimizer.get('schedule', 'constant')} schedule, weight decay {optimizer.get('weight_decay', 0)}."
        )
    seeds = sorted(runs["seed"].unique().tolist())
    sentences.append(
        f"Seeds {_join(seeds)}; ranking for budget targets: {_join(sorted(runs['ranking'].unique()))}; "
        f"dataset {_join(sorted(runs['dataset'].unique()))}."
    )
    return " ".join(sentences)


# Main table --------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the main table: its header, how a row shows in it, and which values are better."""

    header: str
    text: Callable[[pd.Series], str]
    value: Callable[[pd.Series], float] | None = None
    better: str | None = None


def _number(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_APPLICABLE
    return f"{value:.{digits}f}"


def _count(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_APPLICABLE
    return f"{value:,.0f}"


def format_ms(value: float) -> str:
    """Return milliseconds with three significant digits (trailing zeros kept), without exponent notation.

    Example:
        >>> format_ms(0.052117), format_ms(2.0), format_ms(12.34), format_ms(1234.5)
        ('0.0521', '2.00', '12.3', '1234')
    """
    if value is None or math.isnan(value):
        return NOT_APPLICABLE
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:#.3g}"


def format_error(mean: float, std: float) -> str:
    """Return ``mean ± std`` with two decimals, or the mean alone when there is no spread (one seed).

    Example:
        >>> format_error(1.234, 0.5), format_error(1.0, float("nan"))
        ('1.23 ± 0.50', '1.00')
    """
    if math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def _status_text(row: pd.Series) -> str:
    if row["status"] == "failed":
        phases = sorted({phase for _, phase in row["failed"]})
        return f"failed ({', '.join(phases)})"
    return "unreachable"


def _error_text(row: pd.Series) -> str:
    if row["status"] != "ok":
        return _status_text(row)
    return format_error(row["error_pct_mean"], row["error_pct_std"])


def _when_ok(text: Callable[[pd.Series], str]) -> Callable[[pd.Series], str]:
    return lambda row: text(row) if row["status"] == "ok" else NOT_APPLICABLE


def _when_masked(text: Callable[[pd.Series], str]) -> Callable[[pd.Series], str]:
    return lambda row: text(row) if row["status"] == "ok" and is_masked(row) else NOT_APPLICABLE


def widths_text(widths: dict[str, float]) -> str:
    """Return widths joined by dashes in site order, rounded to whole units (a mean over seeds may not be whole).

    Example:
        >>> widths_text({"input": 97.0, "fc1": 71.4, "fc2": 33.0})
        '97-71-33'
    """
    return "-".join(f"{value:.0f}" for value in widths.values())


def _latency_text(batch_size: int) -> Callable[[pd.Series], str]:
    def text(row: pd.Series) -> str:
        value = format_ms(row[f"latency_b{batch_size}_median_ms"])
        return f"{value} {MASK_MARK}" if is_masked(row) else value

    return _when_ok(text)


def _notes_text(row: pd.Series) -> str:
    notes = []
    if row["status"] == "ok":
        notes += [f"seed {seed} failed ({phase})" for seed, phase in row["failed"]]
        notes += [f"seed {seed} unreachable" for seed in row["unreachable_seeds"]]
    return "; ".join(notes)


def main_columns(batch_sizes: list[int], peak_batch_sizes: list[int] = ()) -> list[Column]:
    """Return the columns of the main table, with latency and CUDA peak-memory columns per batch size.

    Latency gets a column for each of ``batch_sizes``. Peak memory gets one
    for each of ``peak_batch_sizes``, the sizes with a measured peak, which
    only CUDA runs record.
    """
    columns = [
        Column("model", lambda r: r["model"]),
        Column("method", lambda r: r["method"]),
        Column("may prune", lambda r: r["prunes"] or ""),
        Column("point", lambda r: r["point"]),
        Column("error % (mean ± std)", _error_text, lambda r: r["error_pct_mean"], "lower"),
        Column("n seeds", lambda r: str(r["n_seeds"])),
        Column("params", _when_ok(lambda r: _count(r["params"])), lambda r: r["params"], "lower"),
        Column("non-zero params", _when_masked(lambda r: _count(r["params_nonzero"])), lambda r: r["params_nonzero"], "lower"),
        Column("params pruned %", _when_ok(lambda r: _number(r["params_pruned_pct"], 1)), lambda r: r["params_pruned_pct"], "higher"),
        Column("FLOPs (fvcore, 1 multiply-add = 1 flop)", _when_ok(lambda r: _count(r["flops_fvcore"])), lambda r: r["flops_fvcore"], "lower"),
        Column("non-zero FLOPs", _when_masked(lambda r: _count(r["flops_nonzero"])), lambda r: r["flops_nonzero"], "lower"),
        Column("FLOPs reduction (x)", _when_ok(lambda r: _number(r["flops_reduction_x"])), lambda r: r["flops_reduction_x"], "higher"),
        Column("activation memory (KiB, one input)", _when_ok(lambda r: _number(r["activation_kib"], 1)),
               lambda r: r["activation_kib"], "lower"),
        Column("file (KiB, state_dict)", _when_ok(lambda r: _number(r["file_kib"], 1)), lambda r: r["file_kib"], "lower"),
        Column("dense file (KiB)", _when_ok(lambda r: _number(r["dense_file_kib"], 1))),
        Column("sparse file (KiB, masked weights stored CSR)", _when_masked(lambda r: _number(r["sparse_file_kib"], 1)),
               lambda r: r["sparse_file_kib"], "lower"),
    ]
    for batch_size in batch_sizes:
        columns.append(Column(
            f"latency b={batch_size} (median ms)", _latency_text(batch_size),
            lambda r, b=batch_size: r[f"latency_b{b}_median_ms"], "lower",
        ))
    for batch_size in peak_batch_sizes:
        columns.append(Column(
            f"CUDA peak b={batch_size} (KiB, above weights)", _when_ok(lambda r, b=batch_size: _number(r[f"peak_memory_b{b}_kib"], 1)),
            lambda r, b=batch_size: r[f"peak_memory_b{b}_kib"], "lower",
        ))
    columns += [
        Column("device", lambda r: r["device"]),
        Column("widths (network order, seed mean)", _when_ok(lambda r: widths_text(r["widths_mean"]))),
        Column("notes", _notes_text),
    ]
    return columns


def _published_cells(row: pd.Series, model: str, columns: list[Column]) -> dict[str, str]:
    cells = {column.header: NOT_APPLICABLE for column in columns}
    params_fraction = float(row["params_fraction"])
    flops_fraction = float(row["flops_fraction"])
    source = row["source"] + (f", {row['table']}" if row["table"] else "")
    notes = [note for note in (source, row["note"]) if note]
    cells.update({
        "model": model,
        "method": f"{row['method']} (published)",
        "may prune": "",
        "point": "published",
        "error % (mean ± std)": row["error_pct_text"],
        "params pruned %": _number(100.0 * (1.0 - params_fraction), 1),
        "FLOPs reduction (x)": _number(1.0 / flops_fraction) if flops_fraction > 0 else NOT_APPLICABLE,
        "widths (network order, seed mean)": row["architecture"] or NOT_APPLICABLE,
        "notes": "; ".join(notes),
    })
    return cells


@dataclass
class TableGroup:
    """The rows of one main table: one dataset, model and device."""

    dataset: str
    model: str
    device: str
    cells: list[dict[str, str]]
    best: list[set[str]]
    has_masked: bool
    comparability: str

    @property
    def title(self) -> str:
        return f"{self.model} on {self.dataset}, device {self.device}"


def _best_headers(points: pd.DataFrame, columns: list[Column]) -> list[set[str]]:
    """Return, per row, the headers of the columns in which that row has the best value of its table."""
    best: list[set[str]] = [set() for _ in range(len(points))]
    ok = points["status"].eq("ok").to_numpy()
    for column in columns:
        if column.better is None:
            continue
        values = np.array([column.value(row) if done else math.nan for row, done in zip(points.to_dict("records"), ok)], dtype=float)
        if column.header.startswith("non-zero"):
            masked = np.array([is_masked(row) for _, row in points.iterrows()])
            values[~masked] = math.nan
        if np.all(np.isnan(values)):
            continue
        target = np.nanmin(values) if column.better == "lower" else np.nanmax(values)
        for position in np.flatnonzero(np.isclose(values, target, rtol=1e-12, atol=0.0)):
            best[position].add(column.header)
    return best


def table_groups(points: pd.DataFrame, published: pd.DataFrame, columns: list[Column]) -> list[TableGroup]:
    """Split the operating points into one table per dataset, model and device, published rows last."""
    groups = []
    for (dataset, model, device), frame in points.groupby(["dataset", "model", "device"], sort=False):
        cells = [{column.header: column.text(row) for column in columns} for _, row in frame.iterrows()]
        best = _best_headers(frame, columns)
        reference = match_published(published, dataset, model)
        for _, row in reference.iterrows():
            cells.append(_published_cells(row, model, columns))
            best.append(set())
        comparability = reference["comparability"].iloc[0] if not reference.empty else ""
        groups.append(TableGroup(
            dataset, model, device, cells, best, any(is_masked(row) for _, row in frame.iterrows()), comparability,
        ))
    return groups


def _markdown_table(cells: list[dict[str, str]], headers: list[str]) -> str:
    frame = pd.DataFrame(cells, columns=headers)
    return frame.to_markdown(index=False, disable_numparse=True)


def render_markdown(groups: list[TableGroup], columns: list[Column], caption: str) -> str:
    """Return the main table as Markdown: a caption, then one section per table group."""
    headers = [column.header for column in columns]
    lines = ["# Pruning benchmark results", "", caption, "", FLOPS_NOTE, DIRECTION_NOTE, POINT_NOTE,
             "Latency is compared only within one device.", ""]
    for group in groups:
        lines += [f"## {group.title}", "", _markdown_table(group.cells, headers), ""]
        if group.has_masked:
            lines += [MASK_NOTE, ""]
        if group.comparability:
            lines += [f"Published rows are {group.comparability}.", ""]
    return "\n".join(lines)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Return ``text`` with LaTeX's special characters escaped and ±, <= and † as math.

    Example:
        >>> tex_escape("1.00 ± 0.50 % <= a_b")
        '1.00 $\\\\pm$ 0.50 \\\\% $\\\\le$ a\\\\_b'
    """
    escaped = "".join(_TEX_ESCAPES.get(character, character) for character in text)
    return escaped.replace("±", r"$\pm$").replace("<=", r"$\le$").replace(MASK_MARK, r"$^\dagger$")


def render_tex(groups: list[TableGroup], columns: list[Column], caption: str) -> str:
    """Return the main table as LaTeX (booktabs), one table per group, best values of each column in bold."""
    headers = [column.header for column in columns]
    text_headers = {"model", "method", "may prune", "point", "device", "widths (network order, seed mean)"}
    alignment = ""
    for header in headers:
        if header == "notes":
            alignment += "p{5cm}"
        elif header in text_headers:
            alignment += "l"
        else:
            alignment += "r"
    lines = ["% Needs \\usepackage{booktabs} and \\usepackage{graphicx}.", ""]
    for number, group in enumerate(groups, start=1):
        notes = [caption, FLOPS_NOTE, DIRECTION_NOTE, "Bold: the best value of each column in this table."]
        if group.has_masked:
            notes.append(MASK_NOTE)
        if group.comparability:
            notes.append(f"Published rows are {group.comparability}.")
        lines += [
            r"\begin{table}[htbp]",
            r"\centering",
            rf"\caption{{{tex_escape(group.title)}. {tex_escape(' '.join(notes))}}}",
            rf"\label{{tab:vibbench-{number}}}",
            r"\resizebox{\textwidth}{!}{%",
            rf"\begin{{tabular}}{{{alignment}}}",
            r"\toprule",
            " & ".join(tex_escape(h) for h in headers) + r" \\",
            r"\midrule",
        ]
        for cells, best in zip(group.cells, group.best):
            row = []
            for header in headers:
                cell = tex_escape(cells[header])
                row.append(rf"\textbf{{{cell}}}" if header in best else cell)
            lines.append(" & ".join(row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def main_csv(points: pd.DataFrame, published: pd.DataFrame, batch_sizes: list[int]) -> pd.DataFrame:
    """Return the main table as numbers, one row per operating point plus matching published rows."""
    rows = []
    for _, point in points.iterrows():
        ok = point["status"] == "ok"
        row = {
            "source": "this benchmark", "dataset": point["dataset"], "model": point["model"],
            "method": point["method"], "units_pruned": point["prunes"], "point": point["point"],
            "setting": point["setting"], "target_metric": point["target_metric"],
            "target_fraction": point["target_fraction"], "strength_param": point["strength_param"],
            "strength": point["strength"], "status": _status_text(point) if not ok else "ok",
            "n_seeds": point["n_seeds"], "seeds": " ".join(str(s) for s in point["seeds"]),
        }
        for column in ("error_pct_mean", "error_pct_std", "val_error_pct_mean", "params", "params_nonzero",
                       "params_fraction_mean", "params_pruned_pct", "flops_fvcore", "flops_nonzero",
                       "flops_fraction_mean", "flops_reduction_x", "activation_kib", "file_kib",
                       "dense_file_kib", "sparse_file_kib"):
            row[column] = point[column] if ok else math.nan
        for batch_size in batch_sizes:
            for column in (f"latency_b{batch_size}_median_ms", f"peak_memory_b{batch_size}_kib"):
                row[column] = point[column] if ok else math.nan
        row["latency_note"] = "masked weights keep dense tensors: no speed-up" if is_masked(point) else ""
        row["device"] = point["device"]
        row["widths"] = widths_text(point["widths_mean"]) if ok else ""
        row["width_sites"] = "-".join(point["widths_mean"]) if ok else ""
        row["notes"] = _notes_text(point)
        rows.append(row)

    for dataset, model in points[["dataset", "model"]].drop_duplicates().itertuples(index=False):
        for _, reference in match_published(published, dataset, model).iterrows():
            rows.append({
                "source": f"published: {reference['source']}", "dataset": dataset, "model": model,
                "method": reference["method"], "point": "published", "status": "published",
                "error_pct_mean": float(reference["error_pct"]),
                "params_fraction_mean": reference["params_fraction"],
                "params_pruned_pct": 100.0 * (1.0 - float(reference["params_fraction"])),
                "flops_fraction_mean": reference["flops_fraction"],
                "widths": reference["architecture"],
                "notes": "; ".join(n for n in (reference["table"], reference["note"], reference["comparability"]) if n),
            })
    frame = pd.DataFrame(rows)
    frame["n_seeds"] = frame["n_seeds"].astype("Int64")
    return frame


# Errors at shared budgets ---------------------------------------------------


def _column_label(method: str, setting: str) -> str:
    return f"{method} ({setting})" if setting else method


def at_budget_table(points: pd.DataFrame) -> pd.DataFrame:
    """Return the error of every method at each compression target, one row per model and target.

    A cell is ``error mean ± std (achieved fraction)`` over seeds, where the
    achieved fraction is of dense FLOPs or parameters (non-zero counts for
    masked weights), or ``failed (phase)`` or ``unreachable``. The column
    ``dense error %`` is the dense network's error at its natural point. A
    ``device`` column is added when the records span several devices.
    """
    targets = points[points["target_metric"].notna()]
    if targets.empty:
        return pd.DataFrame()
    several_devices = points["device"].nunique() > 1
    row_keys = ["dataset", "model"] + (["device"] if several_devices else []) + ["target_metric", "target_fraction"]
    method_labels = []
    for _, point in targets.iterrows():
        label = _column_label(point["method"], point["setting"])
        if label not in method_labels:
            method_labels.append(label)

    rows = []
    for key, frame in targets.groupby(row_keys, sort=False):
        key = dict(zip(row_keys, key))
        row = {"dataset": key["dataset"], "model": key["model"]}
        if several_devices:
            row["device"] = key["device"]
        row["target"] = f"{key['target_metric']} <= {key['target_fraction']:g}"
        row["dense error %"] = _dense_error(points, key)
        row.update({label: NOT_APPLICABLE for label in method_labels})
        max_seeds = int(frame["n_seeds"].max())
        for _, point in frame.iterrows():
            row[_column_label(point["method"], point["setting"])] = _budget_cell(point, max_seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def _dense_error(points: pd.DataFrame, key: dict[str, Any]) -> str:
    dense = points[
        points["dataset"].eq(key["dataset"]) & points["model"].eq(key["model"])
        & points["prunes"].eq("nothing") & points["target_metric"].isna() & points["status"].eq("ok")
    ]
    if "device" in key:
        dense = dense[dense["device"].eq(key["device"])]
    if dense.empty:
        return NOT_APPLICABLE
    first = dense.iloc[0]
    return format_error(first["error_pct_mean"], first["error_pct_std"])


def _budget_cell(point: pd.Series, max_seeds: int) -> str:
    if point["status"] != "ok":
        return _status_text(point)
    achieved = point[f"{point['target_metric']}_fraction_mean"]
    seeds = f", n={point['n_seeds']}" if point["n_seeds"] < max_seeds else ""
    return f"{format_error(point['error_pct_mean'], point['error_pct_std'])} ({achieved:.3f}{seeds})"


def render_at_budget(table: pd.DataFrame, caption: str) -> str:
    """Return the at-budget table as Markdown with its caption."""
    lines = [
        "# Error at shared compression targets", "", caption, "",
        "Each cell: test error % mean ± std over seeds (achieved fraction of dense FLOPs or parameters; "
        "non-zero counts for masked weights). n is given where fewer seeds finished than in the best-covered cell "
        "of the row. Every method is pruned to the target with its own importance ranking and then fine-tuned.",
        "",
    ]
    if table.empty:
        lines.append("No run in these records prunes to a target.")
    else:
        for dataset, frame in table.groupby("dataset", sort=False):
            lines += [f"## {dataset}", "", frame.drop(columns=["dataset"]).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


# Entry point ------------------------------------------------------------------


def write_report(results_dir: Path) -> str:
    """Write tables and figures for the records in ``results_dir/runs``; return the main Markdown table.

    Writes ``table.md``, ``table.csv``, ``table.tex``, ``at_budget.md``,
    ``at_budget.csv`` and ``figures/`` into ``results_dir``. Records that are
    unreadable or incomplete are skipped with a warning naming the file.
    """
    from benchmarks.figures import write_figures

    results_dir = Path(results_dir)
    runs = load_runs(results_dir)
    if runs.empty:
        text = f"# Pruning benchmark results\n\nNo usable run records in {results_dir / 'runs'}.\n"
        logger.warning("no usable run records in %s; the report is empty", results_dir / "runs")
        atomic_write_text(results_dir / "table.md", text)
        return text

    points = aggregate(runs)
    published = load_published()
    batch_sizes = latency_batch_sizes(runs)
    caption = budget_caption(runs)

    peak_batch_sizes = [size for size in batch_sizes if points[f"peak_memory_b{size}_kib"].notna().any()]
    columns = main_columns(batch_sizes, peak_batch_sizes)
    groups = table_groups(points, published, columns)
    text = render_markdown(groups, columns, caption)
    atomic_write_text(results_dir / "table.md", text)
    atomic_write_text(results_dir / "table.tex", render_tex(groups, columns, caption))
    atomic_write_text(results_dir / "table.csv", main_csv(points, published, batch_sizes).to_csv(index=False))

    at_budget = at_budget_table(points)
    atomic_write_text(results_dir / "at_budget.md", render_at_budget(at_budget, caption) + "\n")
    atomic_write_text(results_dir / "at_budget.csv", at_budget.to_csv(index=False))

    written = write_figures(runs, points, published, results_dir / "figures")
    logger.info("report: %d records, %d operating points, %d figure files in %s", len(runs), len(points), len(written), results_dir)
    return text
