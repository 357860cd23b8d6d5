"""Tests of the report: tables and figures from hand-made run records.

The records follow the schema that ``benchmarks.runner`` writes. Every
expected number is computed here from the values put into the records, not
by the report's own code.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks import report as report_module
from benchmarks.report import aggregate, load_runs, match_published, load_published, write_report
from benchmarks.store import ResultsStore

DEVICE = "CPU: test machine"
DENSE_WIDTHS = {"input": 784, "fc1": 300, "fc2": 100}
BUDGET = {
    "dense_epochs": 2, "sparsify_epochs": 3, "finetune_epochs": 1, "batch_size": 50,
    "optimizer": {"name": "adam", "lr": 0.001, "momentum": 0.9, "schedule": "constant", "weight_decay": 0.0},
    "max_batches_per_epoch": None,
}
METHOD_INFO = {
    "dense": {"structured": True, "prunes": "nothing", "strength": None},
    "vibnet": {"structured": True, "prunes": "input features, neurons, channels", "strength": "gamma"},
    "group_lasso": {"structured": True, "prunes": "input features, neurons, channels", "strength": "strength"},
    "magnitude": {"structured": False, "prunes": "single weights", "strength": "final_sparsity"},
}
METHOD_PARAMS = {
    "dense": {},
    "vibnet": {"gamma": 0.0001, "threshold": 0.0},
    "group_lasso": {"strength": 0.0001, "threshold": 0.05},
    "magnitude": {"final_sparsity": 0.9},
}


def mlp_params(widths: dict[str, int]) -> int:
    """Return the parameters of a 784-300-100-10 style MLP with these input and hidden widths."""
    sizes = [widths["input"], widths["fc1"], widths["fc2"], 10]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_flops(widths: dict[str, int]) -> int:
    """Return the multiply-adds of the same MLP for one input."""
    sizes = [widths["input"], widths["fc1"], widths["fc2"], 10]
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


DENSE_PARAMS = mlp_params(DENSE_WIDTHS)
DENSE_FLOPS = mlp_flops(DENSE_WIDTHS)


def make_record(
    method: str,
    seed: int,
    *,
    target: dict[str, Any] | None = None,
    status: str = "ok",
    error_pct: float = 2.0,
    widths: dict[str, int] | None = None,
    nonzero_fraction: float = 1.0,
    latency_ms: tuple[float, float] = (0.5, 4.0),
    phase: str = "finetune",
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a run record in the runner's schema; a masked method uses ``nonzero_fraction``, others ``widths``."""
    params = dict(METHOD_PARAMS[method] if params is None else params)
    run_id = f"{method}-{seed}-{json.dumps(target, sort_keys=True)}-{json.dumps(params, sort_keys=True)}"
    run_id = "".join(c for c in run_id if c.isalnum() or c in "-_.")
    record: dict[str, Any] = {
        "version": 1,
        "run_id": run_id,
        "config": {
            "suite": "test", "model": "lenet300100", "dataset": "mnist5k", "dataset_options": {},
            "method": method, "params": params, "seed": seed, "budget": BUDGET, "target": target,
            "ranking": "global", "measure": {"latency_batch_sizes": [1, 64], "min_run_time_s": 0.01, "threads": 1},
        },
        "environment": {"device": DEVICE, "device_type": "cpu", "torch": "test", "python": "3", "cpu": DEVICE},
        "started": "2026-01-01T00:00:00+0000",
        "method_info": METHOD_INFO[method],
        "status": status,
    }
    if status == "failed":
        record["error"] = {"phase": phase, "epoch": 0, "message": "loss is nan"}
        return copy.deepcopy(record)
    if status == "unreachable":
        record["prune"] = {"kind": "target", "target": target, "planned_fraction": None, "reason": "too small"}
        return copy.deepcopy(record)

    structured = METHOD_INFO[method]["structured"]
    widths = dict(DENSE_WIDTHS if widths is None else widths)
    params_count = mlp_params(widths)
    flops = mlp_flops(widths)
    params_nonzero = round(params_count * nonzero_fraction)
    flops_nonzero = round(flops * nonzero_fraction)
    effective_params = params_count if structured else params_nonzero
    effective_flops = flops if structured else flops_nonzero
    record["prune"] = {"kind": "natural" if target is None else "target", "target": target, "planned_fraction": None}
    record["metrics"] = {
        "test_error_pct": error_pct,
        "val_error_pct": error_pct + 0.5,
        "params": params_count,
        "params_nonzero": params_nonzero,
        "dense_params": DENSE_PARAMS,
        "params_fraction": effective_params / DENSE_PARAMS,
        "flops_fvcore": flops,
        "flops_nonzero": flops_nonzero,
        "dense_flops_fvcore": DENSE_FLOPS,
        "flops_fraction": effective_flops / DENSE_FLOPS,
        "fvcore_unsupported_ops": {},
        "activation_bytes": 4 * (widths["input"] + widths["fc1"] * 2 + widths["fc2"] * 2 + 10),
        "latency": [
            {"batch_size": 1, "median_ms": latency_ms[0], "iqr_ms": 0.0, "mean_ms": latency_ms[0], "min_ms": latency_ms[0],
             "count": 5, "num_threads": 1, "device": DEVICE},
            {"batch_size": 64, "median_ms": latency_ms[1], "iqr_ms": 0.0, "mean_ms": latency_ms[1], "min_ms": latency_ms[1],
             "count": 5, "num_threads": 1, "device": DEVICE},
        ],
        "peak_memory_bytes": {"1": None, "64": None},
        "widths": widths if structured else {},
        "dense_widths": DENSE_WIDTHS,
        "weight_density": {},
    }
    units = sum(widths.values()) if structured else params_nonzero
    record["curves"] = (
        [{"phase": "dense", "epoch": e, "train_loss": 1.0 - 0.1 * e, "penalty": 0.0, "val_error_pct": 5.0 - e, "units": None, "lr": 0.001}
         for e in range(BUDGET["dense_epochs"])]
        + [{"phase": "sparsify", "epoch": e, "train_loss": 0.8, "penalty": 0.1, "val_error_pct": 3.0, "units": units + 10 * (2 - e), "lr": 0.001}
           for e in range(BUDGET["sparsify_epochs"])]
        + [{"phase": "finetune", "epoch": e, "train_loss": 0.5, "penalty": 0.0, "val_error_pct": error_pct, "units": None, "lr": 0.001}
           for e in range(BUDGET["finetune_epochs"])]
    )
    record["best_finetune_epoch"] = 0
    record["seconds"] = {"dense": 1.0, "sparsify": 1.0, "finetune": 1.0}
    return copy.deepcopy(record)


HALF_FLOPS = {"metric": "flops", "fraction": 0.5}
TINY_FLOPS = {"metric": "flops", "fraction": 0.05}
VIB_WIDTHS = [{"input": 560, "fc1": 71, "fc2": 33}, {"input": 577, "fc1": 80, "fc2": 40}]
VIB_HALF_WIDTHS = [{"input": 600, "fc1": 150, "fc2": 60}, {"input": 610, "fc1": 140, "fc2": 55}]


def suite_records() -> list[dict[str, Any]]:
    """Return the records of a small suite: two seeds, a shared target, failures and an unreachable target."""
    records = []
    for seed, error in zip((0, 1), (1.5, 1.9)):
        records.append(make_record("dense", seed, error_pct=error, latency_ms=(0.50, 4.0 + seed)))
    for seed, error in zip((0, 1), (1.7, 2.4)):
        records.append(make_record("vibnet", seed, error_pct=error, widths=VIB_WIDTHS[seed], latency_ms=(0.20, 0.9 + seed)))
    for seed, error in zip((0, 1), (1.8, 2.2)):
        records.append(make_record("vibnet", seed, target=HALF_FLOPS, error_pct=error, widths=VIB_HALF_WIDTHS[seed],
                                   latency_ms=(0.30, 2.0)))
    for seed in (0, 1):
        records.append(make_record("vibnet", seed, target=TINY_FLOPS, status="unreachable"))
    for seed, error in zip((0, 1), (1.6, 2.6)):
        records.append(make_record("magnitude", seed, error_pct=error, nonzero_fraction=0.1, latency_ms=(0.49, 4.1)))
    records.append(make_record("magnitude", 0, target=HALF_FLOPS, error_pct=3.3, nonzero_fraction=0.5))
    records.append(make_record("magnitude", 1, target=HALF_FLOPS, status="failed", phase="finetune"))
    for seed in (0, 1):
        records.append(make_record("group_lasso", seed, target=HALF_FLOPS, status="failed", phase="sparsify"))
        records.append(make_record("group_lasso", seed, error_pct=4.0 + seed, widths={"input": 700, "fc1": 200, "fc2": 90}))
    return records


def write_suite(results_dir: Path) -> dict[str, Path]:
    """Write the suite's records, a truncated record and one without its test error; return the bad files."""
    store = ResultsStore(results_dir)
    store.ensure()
    for record in suite_records():
        store.write(record)

    truncated = store.runs_dir / "truncated.json"
    full_text = json.dumps(make_record("dense", 7, error_pct=0.1))
    truncated.write_text(full_text[: len(full_text) // 2], encoding="utf-8")

    incomplete = make_record("dense", 8, error_pct=0.1)
    del incomplete["metrics"]["test_error_pct"]
    incomplete["run_id"] = "incomplete"
    missing = store.write(incomplete)
    return {"truncated": truncated, "missing": missing}


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Return every pipe table in ``text`` as a list of rows, each a header -> cell dict."""
    tables, header, rows = [], None, []
    for line in text.splitlines() + [""]:
        if not line.startswith("|"):
            if header is not None:
                tables.append(rows)
            header, rows = None, []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif set(line.replace("|", "").strip()) <= {":", "-"}:
            continue
        else:
            rows.append(dict(zip(header, cells)))
    return tables


def find_row(rows: list[dict[str, str]], method: str, point: str) -> dict[str, str]:
    matches = [row for row in rows if row["method"] == method and row["point"] == point]
    assert len(matches) == 1, f"expected one row for {method} / {point}, got {matches}"
    return matches[0]


def error_text(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Any]:
    """Write the suite once and run the full report (figures included) on it."""
    results_dir = tmp_path_factory.mktemp("results")
    bad_files = write_suite(results_dir)
    text = write_report(results_dir)
    return {"dir": results_dir, "text": text, "bad": bad_files}


@pytest.fixture(scope="module")
def main_rows(report) -> list[dict[str, str]]:
    tables = markdown_tables((report["dir"] / "table.md").read_text(encoding="utf-8"))
    assert len(tables) == 1
    return tables[0]


@pytest.fixture(scope="module")
def main_csv(report) -> pd.DataFrame:
    return pd.read_csv(report["dir"] / "table.csv", keep_default_na=False, na_values=[""])


def csv_row(frame: pd.DataFrame, method: str, point: str) -> pd.Series:
    rows = frame[(frame["method"] == method) & (frame["point"] == point) & (frame["source"] == "this benchmark")]
    assert len(rows) == 1, f"expected one CSV row for {method} / {point}, got {len(rows)}"
    return rows.iloc[0]


# Files -------------------------------------------------------------------------


def test_every_file_written(report):
    results_dir = report["dir"]
    for name in ("table.md", "table.csv", "table.tex", "at_budget.md", "at_budget.csv"):
        assert (results_dir / name).is_file(), name
        assert (results_dir / name).stat().st_size > 0, name

    figures = results_dir / "figures"
    stems = [f"mnist5k-lenet300100-{kind}" for kind in ("error-vs-flops", "error-vs-params", "widths", "curves")]
    stems.append("speedup-cpu-test-machine")
    for stem in stems:
        for suffix in (".png", ".pdf"):
            path = figures / f"{stem}{suffix}"
            assert path.is_file(), path
            assert path.stat().st_size > 1000, path
    assert (figures / f"{stems[0]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (figures / f"{stems[0]}.pdf").read_bytes()[:5] == b"%PDF-"


def test_returns_markdown_table(report):
    assert report["text"] == (report["dir"] / "table.md").read_text(encoding="utf-8")


# Main table numbers -------------------------------------------------------------


def test_error_mean_std_in_markdown(main_rows):
    assert find_row(main_rows, "dense", "natural")["error % (mean ± std)"] == error_text([1.5, 1.9])
    assert find_row(main_rows, "vibnet", "natural")["error % (mean ± std)"] == error_text([1.7, 2.4])
    assert find_row(main_rows, "vibnet", "flops <= 0.5")["error % (mean ± std)"] == error_text([1.8, 2.2])
    assert find_row(main_rows, "magnitude", "natural")["error % (mean ± std)"] == error_text([1.6, 2.6])


def test_error_mean_std_in_csv(main_csv):
    for method, point, errors in [
        ("dense", "natural", [1.5, 1.9]),
        ("vibnet", "natural", [1.7, 2.4]),
        ("vibnet", "flops <= 0.5", [1.8, 2.2]),
        ("group_lasso", "natural", [4.0, 5.0]),
    ]:
        row = csv_row(main_csv, method, point)
        assert row["error_pct_mean"] == pytest.approx(statistics.mean(errors)), (method, point)
        assert row["error_pct_std"] == pytest.approx(statistics.stdev(errors)), (method, point)
        assert row["n_seeds"] == 2, (method, point)


def test_costs_match_records(main_rows, main_csv):
    params = [mlp_params(w) for w in VIB_WIDTHS]
    flops = [mlp_flops(w) for w in VIB_WIDTHS]
    row = find_row(main_rows, "vibnet", "natural")
    assert row["params"] == f"{statistics.mean(params):,.0f}"
    assert row["FLOPs (fvcore, 1 multiply-add = 1 flop)"] == f"{statistics.mean(flops):,.0f}"
    assert row["n seeds"] == "2"

    fraction = statistics.mean(p / DENSE_PARAMS for p in params)
    assert row["params pruned %"] == f"{100 * (1 - fraction):.1f}"
    flops_fraction = statistics.mean(f / DENSE_FLOPS for f in flops)
    assert row["FLOPs reduction (x)"] == f"{1 / flops_fraction:.2f}"

    numbers = csv_row(main_csv, "vibnet", "natural")
    assert numbers["params"] == pytest.approx(statistics.mean(params))
    assert numbers["flops_fvcore"] == pytest.approx(statistics.mean(flops))
    assert numbers["params_fraction_mean"] == pytest.approx(fraction)
    assert numbers["flops_reduction_x"] == pytest.approx(1 / flops_fraction)


def test_widths_input_first(main_rows):
    means = {site: statistics.mean(w[site] for w in VIB_WIDTHS) for site in ("input", "fc1", "fc2")}
    expected = "-".join(f"{means[site]:.0f}" for site in ("input", "fc1", "fc2"))
    assert find_row(main_rows, "vibnet", "natural")["widths (network order, seed mean)"] == expected
    assert find_row(main_rows, "dense", "natural")["widths (network order, seed mean)"] == "784-300-100"


def test_latency_median_over_seeds(main_rows, main_csv):
    row = find_row(main_rows, "vibnet", "natural")
    assert row["latency b=1 (median ms)"] == "0.200"
    assert row["latency b=64 (median ms)"] == "1.40"
    assert csv_row(main_csv, "vibnet", "natural")["latency_b64_median_ms"] == pytest.approx(statistics.median([0.9, 1.9]))


def test_masked_columns_and_note(main_rows, report):
    row = find_row(main_rows, "magnitude", "natural")
    assert row["params"] == f"{DENSE_PARAMS:,.0f}"
    assert row["non-zero params"] == f"{round(DENSE_PARAMS * 0.1):,.0f}"
    assert row["non-zero FLOPs"] == f"{round(DENSE_FLOPS * 0.1):,.0f}"
    assert row["latency b=1 (median ms)"].endswith("†")
    assert find_row(main_rows, "vibnet", "natural")["non-zero params"] == "-"
    assert "keep the dense tensors" in report["text"]


def test_failed_run_shows_failed(main_rows, main_csv):
    row = find_row(main_rows, "group_lasso", "flops <= 0.5")
    assert row["error % (mean ± std)"] == "failed (sparsify)"
    assert row["n seeds"] == "0"
    assert row["params"] == "-"
    assert row["latency b=1 (median ms)"] == "-"
    numbers = csv_row(main_csv, "group_lasso", "flops <= 0.5")
    assert numbers["status"] == "failed (sparsify)"
    assert pd.isna(numbers["error_pct_mean"])


def test_partly_failed_point_notes_seed(main_rows):
    row = find_row(main_rows, "magnitude", "flops <= 0.5")
    assert row["error % (mean ± std)"] == "3.30"
    assert row["n seeds"] == "1"
    assert "seed 1 failed (finetune)" in row["notes"]


def test_unreachable_target(main_rows):
    row = find_row(main_rows, "vibnet", "flops <= 0.05")
    assert row["error % (mean ± std)"] == "unreachable"
    assert row["params"] == "-"


def test_caption_states_budget(report):
    text = report["text"]
    assert "dense 2, sparsify 3, finetune 1" in text
    assert "batch size 50" in text
    assert "optimizer adam with lr 0.001" in text
    assert "Seeds 0, 1" in text
    assert "ranking for budget targets: global" in text
    assert "dataset mnist5k" in text
    assert "1 multiply-add = 1 flop" in text
    assert "Lower is better" in text


def test_grouped_by_model_and_device(report):
    assert f"## lenet300100 on mnist5k, device {DEVICE}" in report["text"]


def test_published_rows_beside_ours(main_rows, report):
    row = find_row(main_rows, "vibnet (published)", "published")
    assert row["error % (mean ± std)"] == "1.6"
    assert find_row(main_rows, "dense (published)", "published")["error % (mean ± std)"] == "1.64"
    assert row["widths (network order, seed mean)"] == "97-71-33"
    assert row["params pruned %"] == f"{100 * (1 - 9674 / 266610):.1f}"
    assert "not comparable digit for digit" in report["text"]


# LaTeX ----------------------------------------------------------------------------


def test_tex_booktabs_and_bold_best(report):
    tex = (report["dir"] / "table.tex").read_text(encoding="utf-8")
    assert r"\toprule" in tex
    assert r"\midrule" in tex
    assert r"\bottomrule" in tex
    assert "Lower is better" in tex
    best_error = error_text([1.5, 1.9]).replace("±", r"$\pm$")
    assert rf"\textbf{{{best_error}}}" in tex
    assert r"\textbf{failed" not in tex
    assert "failed (sparsify)" in tex


# At-budget table -----------------------------------------------------------------


def test_at_budget_cells(report):
    tables = markdown_tables((report["dir"] / "at_budget.md").read_text(encoding="utf-8"))
    assert len(tables) == 1
    rows = [row for row in tables[0] if row["target"] == "flops <= 0.5"]
    assert len(rows) == 1
    row = rows[0]

    achieved = statistics.mean(mlp_flops(w) / DENSE_FLOPS for w in VIB_HALF_WIDTHS)
    assert row["vibnet"] == f"{error_text([1.8, 2.2])} ({achieved:.3f})"
    assert row["dense error %"] == error_text([1.5, 1.9])
    assert row["group_lasso"] == "failed (sparsify)"
    assert row["magnitude"] == f"3.30 ({round(DENSE_FLOPS * 0.5) / DENSE_FLOPS:.3f}, n=1)"

    tiny = [row for row in tables[0] if row["target"] == "flops <= 0.05"]
    assert tiny[0]["vibnet"] == "unreachable"


def test_at_budget_csv_matches_markdown(report):
    frame = pd.read_csv(report["dir"] / "at_budget.csv")
    row = frame[frame["target"] == "flops <= 0.5"].iloc[0]
    assert row["group_lasso"] == "failed (sparsify)"
    assert row["dense error %"] == error_text([1.5, 1.9])


# Bad records ------------------------------------------------------------------


def test_bad_records_skipped_with_warning(tmp_path, caplog, monkeypatch):
    bad = write_suite(tmp_path)
    monkeypatch.setattr("benchmarks.figures.write_figures", lambda *args: [])

    with caplog.at_level(logging.WARNING):
        text = write_report(tmp_path)

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(str(bad["truncated"]) in message for message in warnings), warnings
    assert any(str(bad["missing"]) in message and "metrics.test_error_pct" in message for message in warnings), warnings
    rows = markdown_tables(text)[0]
    assert find_row(rows, "dense", "natural")["n seeds"] == "2"
    assert (tmp_path / "at_budget.md").is_file()


def test_record_without_config_field_skipped(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    store.ensure()
    record = make_record("dense", 0)
    del record["config"]["budget"]
    path = store.write(record)
    store.write(make_record("dense", 1))

    with caplog.at_level(logging.WARNING):
        runs = load_runs(tmp_path)

    assert runs["seed"].tolist() == [1]
    assert any(str(path) in r.getMessage() and "config.budget" in r.getMessage() for r in caplog.records)


def test_no_records_writes_note(tmp_path):
    ResultsStore(tmp_path).ensure()

    text = write_report(tmp_path)

    assert "No usable run records" in text
    assert (tmp_path / "table.md").read_text(encoding="utf-8") == text


# Labels and published matching -----------------------------------------------------


def test_strength_sweep_points_keep_value(tmp_path):
    store = ResultsStore(tmp_path)
    store.ensure()
    for gamma in (0.001, 0.0001):
        params = {"gamma": gamma, "threshold": 0.0}
        store.write(make_record("vibnet", 0, params=params, widths=VIB_WIDTHS[0]))
        store.write(make_record("vibnet", 0, params=params, target=HALF_FLOPS, widths=VIB_HALF_WIDTHS[0]))
    store.write(make_record("dense", 0))

    points = aggregate(load_runs(tmp_path))

    labels = points.loc[points["method"] == "vibnet", "point"].tolist()
    assert labels == ["gamma=0.0001", "gamma=0.001", "flops <= 0.5, gamma=0.0001", "flops <= 0.5, gamma=0.001"]
    assert points.loc[points["method"] == "dense", "point"].tolist() == ["natural"]


def test_published_match_by_network_and_dataset():
    published = load_published()

    assert sorted(match_published(published, "mnist", "lenet5")["method"]) == ["dense", "magnitude"]
    assert match_published(published, "mnist", "lenet300100")["comparability"].eq("").all()
    assert match_published(published, "fashion_mnist", "lenet300100").empty
    assert match_published(published, "cifar100", "vgg16").empty
    assert sorted(match_published(published, "cifar10", "vgg16")["method"]) == ["dense", "slimming"]


def test_published_csv_columns():
    header = report_module.PUBLISHED_CSV.read_text(encoding="utf-8").splitlines()[0]
    published = load_published()

    assert header.split(",") == report_module.PUBLISHED_COLUMNS
    assert published["error_pct"].between(0, 100).all()
    assert published["error_pct"].notna().all()
    assert published["params_fraction"].dropna().between(0, 1).all()



def test_only_failed_runs_still_report(tmp_path):
    store = ResultsStore(tmp_path)
    store.ensure()
    store.write(make_record("dense", 0, status="failed", phase="dense"))
    store.write(make_record("vibnet", 0, target=HALF_FLOPS, status="failed", phase="sparsify"))

    text = write_report(tmp_path)

    rows = markdown_tables(text)[0]
    assert find_row(rows, "dense", "natural")["error % (mean ± std)"] == "failed (dense)"
    assert find_row(rows, "vibnet", "flops <= 0.5")["error % (mean ± std)"] == "failed (sparsify)"
    assert (tmp_path / "figures" / "mnist5k-lenet300100-error-vs-flops.png").is_file()


def test_devices_get_separate_tables(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.ensure()
    for device, error in (("GPU: test", 1.0), (DEVICE, 3.0)):
        for method, target in (("dense", None), ("vibnet", HALF_FLOPS)):
            record = make_record(method, 0, target=target, error_pct=error, widths=VIB_HALF_WIDTHS[0] if target else None)
            record["environment"]["device"] = device
            record["run_id"] += device.split(":")[0]
            store.write(record)
    monkeypatch.setattr("benchmarks.figures.write_figures", lambda *args: [])

    text = write_report(tmp_path)

    tables = markdown_tables(text)
    assert len(tables) == 2
    assert {row["device"] for row in tables[0] if row["method"] == "dense"} == {DEVICE}
    assert {row["device"] for row in tables[1] if row["method"] == "dense"} == {"GPU: test"}
    budget = pd.read_csv(tmp_path / "at_budget.csv")
    assert sorted(budget["device"]) == sorted([DEVICE, "GPU: test"])
    achieved = mlp_flops(VIB_HALF_WIDTHS[0]) / DENSE_FLOPS
    assert sorted(budget["vibnet"]) == [f"1.00 ({achieved:.3f})", f"3.00 ({achieved:.3f})"]


def test_cuda_peak_column_when_measured(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.ensure()
    for seed, peak in ((0, 2048), (1, 4096)):
        record = make_record("dense", seed)
        record["metrics"]["peak_memory_bytes"] = {"1": 1024, "64": peak}
        store.write(record)
    monkeypatch.setattr("benchmarks.figures.write_figures", lambda *args: [])

    rows = markdown_tables(write_report(tmp_path))[0]

    row = find_row(rows, "dense", "natural")
    assert row["CUDA peak b=64 (KiB, above weights)"] == f"{statistics.median([2048, 4096]) / 1024:.1f}"
    assert row["CUDA peak b=1 (KiB, above weights)"] == "1.0"


def test_cuda_peak_column_absent_on_cpu(main_rows):
    assert not any(header.startswith("CUDA peak") for header in main_rows[0])
