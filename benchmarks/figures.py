"""Paper-style figures from aggregated run records, each written as PNG and PDF.

Every figure reads in black and white: each method has its own marker, line
style and bar hatch, and colour only repeats that. Figures are drawn on
``matplotlib.figure.Figure`` objects, which render PNG through Agg without
touching pyplot's global state. The figures, per dataset and model unless
stated (with ``-DEVICE`` appended to the name when records span devices):

- ``DATASET-MODEL-error-vs-flops``: test error against the remaining fraction
  of dense FLOPs (log axis). Each method is one line over its natural point
  and targets, with error bars over seeds. The Pareto front of all points and
  the dense error (a horizontal line) are drawn too;
- ``DATASET-MODEL-error-vs-params``: the same against remaining parameters;
- ``DATASET-MODEL-widths``: surviving units per layer at each structured
  method's natural point, dense widths as outlines;
- ``DATASET-MODEL-curves``: train loss, validation error and surviving units
  over the epochs of the dense, sparsify and finetune phases;
- ``speedup-DEVICE``: measured latency speed-up against FLOPs reduction, one
  panel per model and batch size, with the ideal diagonal.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from benchmarks.pareto import pareto_front
from benchmarks.report import METHOD_ORDER, is_masked, latency_batch_sizes, match_published

logger = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)))
HATCHES = ("//", "\\\\", "xx", "..", "++", "--", "oo", "**")
# Positions in seaborn's colorblind palette, chosen so that the first methods
# (dense, vibnet, group_lasso, slimming, magnitude) get clearly different hues.
PALETTE_ORDER = (0, 3, 2, 4, 5, 1, 9, 6, 8, 7)
PHASES = ("dense", "sparsify", "finetune")
COST_AXES = {
    "flops": ("flops_fraction_mean", "remaining FLOPs (fraction of dense, fvcore; non-zero for masked weights)"),
    "params": ("params_fraction_mean", "remaining parameters (fraction of dense; non-zero for masked weights)"),
}


def slug(text: str) -> str:
    """Return ``text`` as a lower-case file-name part of letters, digits and dashes.

    Example:
        >>> slug("CPU: AMD EPYC 7B13")
        'cpu-amd-epyc-7b13'
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unnamed"


def series_label(method: str, setting: str) -> str:
    """Return the legend label of a method, with its sweep setting when there is one."""
    return f"{method} ({setting})" if setting else method


class Styles:
    """A fixed marker, line style, hatch and colour per series label, the same in every figure.

    A label is a method name, or a method with its sweep setting
    (``series_label``); each gets its own style.
    """

    def __init__(self, labels: list[str]) -> None:
        palette = sns.color_palette("colorblind", n_colors=10)
        self._styles = {
            label: {
                "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINE_STYLES[i % len(LINE_STYLES)],
                "hatch": HATCHES[i % len(HATCHES)],
                "color": palette[PALETTE_ORDER[i % len(PALETTE_ORDER)]],
            }
            for i, label in enumerate(labels)
        }

    @property
    def labels(self) -> list[str]:
        return list(self._styles)

    def __getitem__(self, label: str) -> dict[str, Any]:
        return self._styles[label]


def _save(figure: Figure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    # No creation date in the PDF, so an unchanged figure gives an unchanged file.
    figure.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})
    return paths


def _tick_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def _log_ticks(axis, values: list[float]) -> None:
    """Put plain decimal ticks (0.1, 0.2, 0.5, 1, 2, 5, ...) on a log axis spanning ``values``."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    exponents = range(math.floor(math.log10(low / 1.5)), math.ceil(math.log10(high * 1.5)) + 1)
    candidates = [m * 10.0**e for e in exponents for m in (1, 2, 5)]
    ticks = [t for t in candidates if low / 1.5 <= t <= high * 1.5]
    if sum(low <= t <= high for t in ticks) < 2:
        ticks = sorted(set(ticks) | {float(f"{low:.2g}"), float(f"{high:.2g}")})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda value, _: _tick_text(value)))
    axis.set_minor_formatter(NullFormatter())


def _footnote(figure: Figure, lines: list[str]) -> None:
    text = "\n".join(textwrap.fill(line, width=130) for line in lines if line)
    if text:
        figure.text(0.01, 0.0, text, fontsize=7, va="top", ha="left")


def _legend(ax: Axes, **options: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def _short_source(source: str) -> str:
    return source.split(",")[0]


def _dense_point(frame: pd.DataFrame) -> pd.Series | None:
    dense = frame[frame["prunes"].eq("nothing") & frame["target_metric"].isna() & frame["status"].eq("ok")]
    return dense.iloc[0] if not dense.empty else None


def _not_shown(frame: pd.DataFrame) -> str:
    skipped = frame[frame["status"] != "ok"]
    if skipped.empty:
        return ""
    items = [f"{row['method']} {row['point']} ({row['status']})" for _, row in skipped.iterrows()]
    return "Not shown: " + "; ".join(items)


# Error against cost -------------------------------------------------------------


def _draw_dense_line(ax: Axes, dense: pd.Series | None) -> None:
    if dense is None:
        return
    mean, std = dense["error_pct_mean"], dense["error_pct_std"]
    ax.axhline(mean, color="black", linestyle=":", linewidth=1.2, label=f"dense ({mean:.2f} %)")
    if not math.isnan(std):
        ax.axhspan(mean - std, mean + std, color="0.92", zorder=0)


def _draw_published(ax: Axes, published: pd.DataFrame, fraction_column: str) -> pd.DataFrame:
    """Draw published pruned results that report ``fraction_column`` as hollow stars; return the rows drawn."""
    rows = published[published["method"].ne("dense") & published[fraction_column].notna()]
    for number, (_, row) in enumerate(rows.iterrows()):
        x, y = float(row[fraction_column]), float(row["error_pct"])
        ax.scatter([x], [y], marker="*", s=140, facecolors="none", edgecolors="black", linewidths=1.0,
                   label="published" if number == 0 else None, zorder=4)
        # Stagger the labels upwards, so that neighbouring stars do not share one line of text.
        ax.annotate(f"{row['method']}, {_short_source(row['source'])}", (x, y), textcoords="offset points",
                    xytext=(6, 6 + 11 * (number % 3)), fontsize=7)
    return rows


def error_vs_cost_figure(points: pd.DataFrame, published: pd.DataFrame, cost: str, styles: Styles) -> Figure:
    """Return the error-against-cost figure of one dataset and model (``cost`` is ``flops`` or ``params``)."""
    column, xlabel = COST_AXES[cost]
    first = points.iloc[0]
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.subplots()

    ok = points[points["status"].eq("ok")]
    dense = _dense_point(points)
    _draw_dense_line(ax, dense)

    front = pareto_front(ok, column, "error_pct_mean")
    if len(front) > 0:
        ax.step(front[column], front["error_pct_mean"], where="post", color="0.45", linewidth=5, alpha=0.35,
                solid_capstyle="round", label="Pareto front (all points)", zorder=1)

    pruned = ok[~ok["prunes"].eq("nothing")]
    for method, frame in pruned.groupby("method", sort=False):
        frame = frame.sort_values(column)
        style = styles[method]
        ax.errorbar(
            frame[column], frame["error_pct_mean"], yerr=frame["error_pct_std"].fillna(0.0),
            marker=style["marker"], linestyle=style["linestyle"], color=style["color"], markersize=6,
            markerfacecolor="white", markeredgewidth=1.3, capsize=3, label=method, zorder=3,
        )

    drawn = _draw_published(ax, published, cost + "_fraction")
    xs = ok[column].tolist() + drawn[cost + "_fraction"].astype(float).tolist()
    ax.set_xscale("log")
    _log_ticks(ax.xaxis, xs)
    ax.set_xlabel(xlabel + ", log scale")
    ax.set_ylabel("test error (%)")
    quantity = "FLOPs" if cost == "flops" else "parameters"
    ax.set_title(f"{first['model']} on {first['dataset']}: error vs {quantity}")
    _legend(ax, fontsize="small", loc="best", framealpha=0.9)

    _footnote(figure, [_not_shown(points), _published_footnote(drawn),
                       "Error bars and grey band: one standard deviation over seeds."])
    return figure


def _published_footnote(drawn: pd.DataFrame) -> str:
    if drawn.empty:
        return ""
    sources = ", ".join(sorted(set(drawn["source"].map(_short_source))))
    comparability = drawn["comparability"].iloc[0]
    text = f"Stars: published results ({sources})"
    return f"{text}, {comparability}." if comparability else f"{text}."


# Surviving units per layer -----------------------------------------------------


def widths_figure(points: pd.DataFrame, styles: Styles) -> Figure:
    """Return grouped bars of surviving units per layer at each structured method's natural point."""
    first = points.iloc[0]
    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = figure.subplots()

    natural = points[points["target_metric"].isna() & points["status"].eq("ok")]
    dense = _dense_point(points)
    reference = natural.iloc[0] if dense is None and not natural.empty else dense
    if reference is None:
        ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
        return figure

    sites = list(reference["dense_widths"])
    positions = np.arange(len(sites), dtype=float)
    ax.bar(positions, [reference["dense_widths"][s] for s in sites], width=0.9, fill=False, edgecolor="black",
           linewidth=1.4, label="dense width", zorder=3)

    masked = natural[[is_masked(row) for _, row in natural.iterrows()]]
    structured_runs = natural[~natural["prunes"].eq("nothing") & ~natural.index.isin(masked.index)]
    bar_width = 0.8 / max(len(structured_runs), 1)
    for number, (_, row) in enumerate(structured_runs.iterrows()):
        label = series_label(row["method"], row["setting"])
        style = styles[label]
        offsets = positions - 0.4 + bar_width * (number + 0.5)
        means = [row["widths_mean"].get(s, 0.0) for s in sites]
        spread = [row["widths_std"].get(s, math.nan) for s in sites]
        bars = ax.bar(offsets, means, width=bar_width, yerr=np.nan_to_num(spread), color=style["color"], alpha=0.75,
                      hatch=style["hatch"], edgecolor="black", linewidth=0.6, capsize=2, label=label, zorder=2)
        ax.bar_label(bars, labels=[f"{m:.0f}" for m in means], fontsize=7, padding=2)

    ax.set_xticks(positions, sites)
    ax.set_xlabel("layer (input features first)")
    ax.set_ylabel("surviving units (neurons or channels)")
    ax.set_title(f"{first['model']} on {first['dataset']}: surviving units at the natural point")
    _legend(ax, fontsize="small", loc="best", framealpha=0.9)
    notes = ["Bars: mean over seeds, error bars one standard deviation; outlines: dense widths."]
    if not masked.empty:
        names = ", ".join(sorted(set(masked["method"])))
        notes.append(f"Not shown: {names} masks single weights and keeps every unit.")
    _footnote(figure, notes)
    return figure


# Measured speed-up ---------------------------------------------------------------


def speedup_figure(points: pd.DataFrame, device: str, batch_sizes: list[int], styles: Styles) -> Figure | None:
    """Return speed-up against FLOPs reduction on one device: a row per model, a column per batch size.

    Speed-up is the dense network's median latency over the pruned one's, both
    measured on ``device``. Returns None when no model has a dense run there.
    """
    on_device = points[points["device"].eq(device) & points["status"].eq("ok")]
    models = []
    for key, frame in on_device.groupby(["dataset", "model"], sort=False):
        dense = _dense_point(frame)
        if dense is None:
            logger.warning("speed-up figure for %s: no dense run of %s on %s; that model is left out", device, key[1], key[0])
            continue
        models.append((key, frame, dense))
    if not models or not batch_sizes:
        return None

    figure = Figure(figsize=(4.6 * len(batch_sizes), 4.0 * len(models)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(models), len(batch_sizes), squeeze=False))
    for row_axes, ((dataset, model), frame, dense) in zip(axes, models):
        pruned = frame[~frame["prunes"].eq("nothing")]
        for ax, batch_size in zip(row_axes, batch_sizes):
            _draw_speedup(ax, pruned, dense, batch_size, styles)
            ax.set_title(f"{model} on {dataset}, batch {batch_size}", fontsize="medium")
    figure.suptitle(f"Measured speed-up on {device} (latency is not compared across devices)", fontsize="medium")
    _footnote(figure, [
        "Speed-up: median latency of the dense network over that of the pruned one, both on this device.",
        "Masked weights keep dense tensors, so a masked method's speed-up is timing noise, not a gain from pruning.",
    ])
    return figure


def _draw_speedup(ax: Axes, pruned: pd.DataFrame, dense: pd.Series, batch_size: int, styles: Styles) -> None:
    column = f"latency_b{batch_size}_median_ms"
    values = [1.0]
    for method, frame in pruned.groupby("method", sort=False):
        frame = frame[frame[column].notna() & frame[column].gt(0)]
        if frame.empty:
            continue
        speedup = dense[column] / frame[column]
        style = styles[method]
        label = method + (" (masked)" if is_masked(frame.iloc[0]) else "")
        ax.scatter(frame["flops_reduction_x"], speedup, marker=style["marker"], s=40, facecolors="white",
                   edgecolors=style["color"], linewidths=1.4, label=label, zorder=3)
        values += frame["flops_reduction_x"].tolist() + speedup.tolist()

    finite = [v for v in values if math.isfinite(v) and v > 0]
    low, high = min(finite) / 1.3, max(finite) * 1.3
    ax.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1.0, label="ideal (speed-up = FLOPs reduction)")
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1.0, label="no speed-up")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    _log_ticks(ax.xaxis, [low * 1.3, high / 1.3])
    _log_ticks(ax.yaxis, [low * 1.3, high / 1.3])
    ax.set_xlabel("FLOPs reduction (x, fvcore; non-zero for masked weights)")
    ax.set_ylabel("measured speed-up (x)")
    ax.legend(fontsize="x-small", loc="upper left", framealpha=0.9)


# Training curves ---------------------------------------------------------------


def _curve_frame(run: pd.Series) -> pd.DataFrame:
    """Return one run's curves with ``x``, the epoch counted across phases (1 is the end of the first epoch)."""
    budget = run["budget"]
    offsets = {
        "dense": 0,
        "sparsify": budget["dense_epochs"],
        "finetune": budget["dense_epochs"] + budget["sparsify_epochs"],
    }
    rows = [entry for entry in run["curves"] if isinstance(entry, dict) and entry.get("phase") in offsets]
    frame = pd.DataFrame(rows, columns=["phase", "epoch", "train_loss", "penalty", "val_error_pct", "units"])
    frame["x"] = frame["phase"].map(offsets) + frame["epoch"].astype(float) + 1
    frame["seed"] = run["seed"]

    # The runner counts units only while they can change. A structured
    # method has every dense unit before the sparsify phase and keeps its
    # pruned widths while fine-tuning, so both are filled in from the record.
    if run["prunes"] != "nothing" and not is_masked(run):
        units = pd.to_numeric(frame["units"], errors="coerce")
        fill = frame["phase"].map({"dense": sum(run["dense_widths"].values()), "finetune": sum(run["widths"].values())})
        frame["units"] = units.fillna(fill)
    return frame


def curves_figure(runs: pd.DataFrame, styles: Styles) -> Figure:
    """Return train loss, validation error and surviving units over epochs, one line per method (mean over seeds)."""
    first = runs.iloc[0]
    figure = Figure(figsize=(7.0, 8.0), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    panels = [
        ("train_loss", "train loss (cross-entropy)"),
        ("val_error_pct", "validation error (%)"),
        ("units", "surviving units (structured)\nor non-zero weights (masked)"),
    ]

    natural = runs[runs["status"].eq("ok") & runs["target_metric"].isna()]
    order = {method: number for number, method in enumerate(styles.labels)}
    natural = natural.assign(
        _order=natural["method"].map(order),
        _strength=pd.to_numeric(natural["strength"], errors="coerce"),
    ).sort_values(["_order", "_strength", "setting"], kind="stable")
    units_seen: list[float] = []
    for (method, setting), group in natural.groupby(["method", "setting"], sort=False):
        curves = pd.concat([_curve_frame(run) for _, run in group.iterrows()], ignore_index=True)
        if curves.empty:
            continue
        label = series_label(method, setting)
        style = styles[label]
        for ax, (column, _) in zip(axes, panels):
            values = pd.to_numeric(curves[column], errors="coerce")
            if column == "units":
                if group["prunes"].iloc[0] == "nothing":
                    continue
                values = values.where(values > 0)
            summary = values.groupby(curves["x"]).agg(["mean", "std"]).dropna(subset=["mean"])
            if summary.empty:
                continue
            if column == "units":
                units_seen += summary["mean"].tolist()
            ax.plot(summary.index, summary["mean"], marker=style["marker"], linestyle=style["linestyle"],
                    color=style["color"], markerfacecolor="white", markersize=5, label=label)
            spread = summary["std"].fillna(0.0)
            ax.fill_between(summary.index, summary["mean"] - spread, summary["mean"] + spread, color=style["color"], alpha=0.15)

    budget = first["budget"]
    edges = [budget["dense_epochs"], budget["dense_epochs"] + budget["sparsify_epochs"]]
    starts = [0, edges[0], edges[1]]
    ends = [edges[0], edges[1], edges[1] + budget["finetune_epochs"]]
    for ax, (_, ylabel) in zip(axes, panels):
        for edge in edges:
            ax.axvline(edge + 0.5, color="0.4", linestyle=":", linewidth=1.0)
        ax.set_ylabel(ylabel, fontsize="small")
    for phase, start, end in zip(PHASES, starts, ends):
        if end > start:
            axes[0].text((start + end) / 2 + 0.5, 1.02, phase, transform=axes[0].get_xaxis_transform(),
                         ha="center", va="bottom", fontsize="small")
    if units_seen:
        axes[2].set_yscale("log")
        _log_ticks(axes[2].yaxis, units_seen)
    axes[2].set_xlabel("epoch (dense, then sparsify, then finetune)")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(axes[0], fontsize="small", loc="best", framealpha=0.9)
    figure.suptitle(f"{first['model']} on {first['dataset']}: training curves at the natural point (mean ± std over seeds)",
                    fontsize="medium")
    return figure


# Entry point ----------------------------------------------------------------


def write_figures(runs: pd.DataFrame, points: pd.DataFrame, published: pd.DataFrame, figures_dir: Path) -> list[Path]:
    """Write every figure as PNG and PDF into ``figures_dir``; return the written paths.

    ``runs`` is ``benchmarks.report.load_runs``'s frame, ``points`` its
    aggregate over seeds, ``published`` the reference results of
    ``benchmarks.report.load_published``.
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    # Known methods keep their style in every suite. Others follow in order of appearance.
    methods = list(METHOD_ORDER) + [m for m in dict.fromkeys(points["method"]) if m not in METHOD_ORDER]
    swept = [series_label(m, s) for m, s in dict.fromkeys(zip(points["method"], points["setting"])) if s]
    styles = Styles(methods + swept)
    written: list[Path] = []

    # Runs of one model on several devices are separate operating points, so
    # each device gets its own figures, with the device in the file name.
    several_devices = points["device"].nunique() > 1
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        for (dataset, model, device), frame in points.groupby(["dataset", "model", "device"], sort=False):
            name = f"{slug(dataset)}-{slug(model)}" + (f"-{slug(device)}" if several_devices else "")
            reference = match_published(published, dataset, model)
            for cost in COST_AXES:
                figure = error_vs_cost_figure(frame, reference, cost, styles)
                written += _save(figure, figures_dir / f"{name}-error-vs-{cost}")
            written += _save(widths_figure(frame, styles), figures_dir / f"{name}-widths")
            model_runs = runs[runs["dataset"].eq(dataset) & runs["model"].eq(model) & runs["device"].eq(device)]
            written += _save(curves_figure(model_runs, styles), figures_dir / f"{name}-curves")

        batch_sizes = latency_batch_sizes(runs)
        for device in points["device"].unique():
            figure = speedup_figure(points, device, batch_sizes, styles)
            if figure is not None:
                written += _save(figure, figures_dir / f"speedup-{slug(device)}")
    return written
