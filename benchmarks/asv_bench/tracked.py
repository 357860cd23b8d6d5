"""Tracked outcomes of a tiny, fixed-seed suite run on the CPU: test error, parameters, FLOPs.

``TrackedRun.setup_cache`` runs the suite once per asv invocation into a
temporary results folder and hands the records' metrics to the ``track_``
benchmarks. With one thread and deterministic algorithms the run is
bit-for-bit reproducible on one machine, so the CI gate
(``.ci/asv_compare.sh``) fails on any change of these values. Other CPUs
may round differently, so compare values from one machine only.

To change a tracked value on purpose (a better default, a new budget),
increase ``TRACKED_VERSION`` in the same commit: asv then treats the
benchmarks as new and the gate does not compare them with the base.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import Budget, Measure, MethodEntry, Suite, Targets
from benchmarks.runner import RunOptions, run_suite
from benchmarks.store import ResultsStore

from .common import METHOD_NAMES, MODEL_NAME

TRACKED_VERSION = "1"
TRACKED_THREADS = 1
NATURAL = "natural"
FLOPS_TARGET = 0.25
OPERATING_POINTS = [NATURAL, f"flops_{FLOPS_TARGET:g}"]

logger = logging.getLogger(__name__)


def tracked_suite() -> Suite:
    """Return the tiny suite whose outcomes are tracked: LeNet-5 on mnist5k, 15 batches per epoch.

    VIBNet gets a larger initial sigma and gate learning rate than its
    defaults, and group lasso a larger strength. With the defaults, neither
    prunes a unit at its natural operating point within this short budget,
    and the tracked values would not exercise their pruning code.
    """
    return Suite(
        name="asv-tracked",
        description="tiny fixed-seed run whose outcomes asv tracks",
        dataset="mnist5k",
        models=[MODEL_NAME],
        methods=[
            MethodEntry(name="dense"),
            MethodEntry(name="vibnet", params={"gamma": 1e-3, "gate_lr_factor": 50.0, "init_log_sigma2": -4.0}),
            MethodEntry(name="group_lasso", params={"strength": 1e-3}),
            MethodEntry(name="slimming"),
            MethodEntry(name="magnitude"),
        ],
        seeds=[0],
        budget=Budget(dense_epochs=1, sparsify_epochs=2, finetune_epochs=1, batch_size=64, max_batches_per_epoch=15),
        targets=Targets(flops=[FLOPS_TARGET]),
        measure=Measure(latency_batch_sizes=[1], min_run_time_s=0.01, threads=1),
    )


def operating_point(record: dict[str, Any]) -> str:
    """Return ``natural`` or ``<metric>_<fraction>`` for a run record."""
    target = record["config"]["target"]
    return NATURAL if target is None else f"{target['metric']}_{target['fraction']:g}"


def tracked_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """Return the tracked values of one record, or the reason it has none.

    Parameters and FLOPs are the compact model's; for unstructured pruning
    they are the non-zero counts, as the report's fractions use them.
    """
    if record["status"] != "ok":
        return {"status": record["status"], "reason": record.get("error", record.get("prune", {}))}
    metrics = record["metrics"]
    structured = record["method_info"]["structured"]
    return {
        "status": "ok",
        "test_error_pct": metrics["test_error_pct"],
        "params": metrics["params"] if structured else metrics["params_nonzero"],
        "flops": metrics["flops_fvcore"] if structured else metrics["flops_nonzero"],
    }


def run_tracked_suite() -> dict[str, dict[str, Any]]:
    """Run the tracked suite deterministically and return tracked values keyed by ``method/point``."""
    torch.set_num_threads(TRACKED_THREADS)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory(prefix="vibbench-asv-") as folder:
        outcome = run_suite(tracked_suite(), RunOptions(results_dir=Path(folder)))
        logger.info("tracked suite: %d runs finished, %d failed", outcome.finished, len(outcome.failed))
        records = [record for _, record in ResultsStore(Path(folder)).records()]
    return {f"{r['config']['method']}/{operating_point(r)}": tracked_metrics(r) for r in records}


class TrackedRun:
    """Outcomes of the tracked suite per method and operating point (dense has no target)."""

    params = (list(METHOD_NAMES), OPERATING_POINTS)
    param_names = ["method", "operating_point"]
    version = TRACKED_VERSION

    def setup_cache(self) -> dict[str, dict[str, Any]]:
        return run_tracked_suite()

    setup_cache.timeout = 600.0

    def setup(self, cache: dict[str, dict[str, Any]], method: str, point: str) -> None:
        key = f"{method}/{point}"
        if key not in cache:
            raise NotImplementedError(f"the tracked suite has no run {key}")
        self.values = cache[key]

    def _value(self, name: str) -> float:
        if self.values["status"] != "ok":
            raise RuntimeError(f"tracked run ended with status {self.values['status']}: {self.values['reason']}")
        value = self.values[name]
        if isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError(f"tracked value {name} is {value}")
        return value

    def track_test_error_pct(self, cache, method: str, point: str) -> float:
        return self._value("test_error_pct")

    track_test_error_pct.unit = "%"

    def track_params(self, cache, method: str, point: str) -> int:
        return self._value("params")

    track_params.unit = "parameters"

    def track_flops(self, cache, method: str, point: str) -> int:
        return self._value("flops")

    track_flops.unit = "fvcore flops (multiply-adds)"
