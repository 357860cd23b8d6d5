"""Tables from run records; the report never trains."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from benchmarks.store import ResultsStore, atomic_write_text

logger = logging.getLogger(__name__)


def load_records(results_dir: Path) -> pd.DataFrame:
    """Return one row per successful record."""
    rows = []
    for path, record in ResultsStore(results_dir).records():
        if record.get("status") != "ok":
            continue
        config, metrics = record["config"], record["metrics"]
        target = config.get("target")
        latency = {t["batch_size"]: t["median_ms"] for t in metrics["latency"]}
        rows.append({
            "model": config["model"], "method": config["method"], "seed": config["seed"],
            "point": "natural" if target is None else f"{target['metric']} <= {target['fraction']:g}",
            "error_pct": metrics["test_error_pct"], "params": metrics["params"],
            "params_nonzero": metrics["params_nonzero"], "params_fraction": metrics["params_fraction"],
            "flops": metrics["flops_fvcore"], "flops_nonzero": metrics["flops_nonzero"],
            "flops_fraction": metrics["flops_fraction"], "activation_bytes": metrics["activation_bytes"],
            "latency_b1_ms": latency.get(1), "latency_b64_ms": latency.get(64),
            "device": record["environment"]["device"],
            "widths": "-".join(str(v) for v in metrics["widths"].values()),
        })
    return pd.DataFrame(rows)


def write_report(results_dir: Path) -> str:
    frame = load_records(results_dir)
    if frame.empty:
        return "no records"
    atomic_write_text(Path(results_dir) / "table.csv", frame.to_csv(index=False))
    text = frame.to_markdown(index=False, floatfmt=".4g")
    atomic_write_text(Path(results_dir) / "table.md", text + "\n")
    return text
