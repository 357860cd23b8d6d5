"""Rules of the asv regression gate (benchmarks/asv_bench/gate.py) on hand-written result files.

The gate's module is loaded from its file, because the asv suite is not part
of the installed package.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

GATE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "asv_bench" / "gate.py"
COLUMNS = ["result", "params", "version"]
FLOPS = "tracked.TrackedRun.track_flops"
STEP = "training_step.TrainingStep.time_training_step"
PEAKMEM = "training_step.TrainingStep.peakmem_training_step"


@pytest.fixture(scope="module")
def gate():
    spec = importlib.util.spec_from_file_location("asv_gate", GATE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _write(folder: Path, results: dict[str, list]) -> Path:
    machine = folder / "machine"
    machine.mkdir(parents=True)
    data = {"result_columns": COLUMNS, "results": results}
    (machine / "abcd1234-existing-py.json").write_text(json.dumps(data), encoding="utf-8")
    (machine / "machine.json").write_text("{}", encoding="utf-8")
    return folder


def _results(flops: list, step: list, flops_version: str = "1") -> dict[str, list]:
    methods = [["'dense'", "'vibnet'"]]
    return {
        FLOPS: [flops, methods, flops_version],
        STEP: [step, methods, "abc"],
        PEAKMEM: [[6.0e8, 6.1e8], methods, "def"],
    }


def _check(gate, tmp_path: Path, base: dict, head: dict, confirm: bool = False):
    base_dir = _write(tmp_path / "base", base)
    head_dir = _write(tmp_path / "head", head)
    old = gate.load_results(gate.result_file(base_dir))
    new = gate.load_results(gate.result_file(head_dir))
    return gate.compare(old, new, confirm_slowdowns=confirm)


def test_gate_unchanged_passes(gate, tmp_path):
    results = _results([2293000, 219022], [0.030, 0.031])
    verdict = _check(gate, tmp_path, results, results)
    assert verdict.failures == []
    assert verdict.slowed == []


def test_gate_flops_change_fails(gate, tmp_path):
    verdict = _check(gate, tmp_path, _results([2293000, 219022], [0.03, 0.03]), _results([2293000, 438044], [0.03, 0.03]))
    assert len(verdict.failures) == 1
    assert "219022 -> 438044" in verdict.failures[0]


def test_gate_tolerance_absorbs_rounding(gate, tmp_path):
    base = _results([7.3, 9.8], [0.03, 0.03])
    head = _results([7.3 * (1 + 1e-12), 9.8], [0.03, 0.03])
    assert _check(gate, tmp_path, base, head).failures == []


def test_gate_redefined_not_compared(gate, tmp_path):
    base = _results([2293000, 219022], [0.03, 0.03])
    head = _results([2293000, 438044], [0.03, 0.03], flops_version="2")
    assert _check(gate, tmp_path, base, head).failures == []


def test_gate_slowdown_needs_rerun(gate, tmp_path):
    base = _results([1, 2], [0.030, 0.030])
    head = _results([1, 2], [0.030, 0.050])
    first = _check(gate, tmp_path / "first", base, head)
    assert first.failures == []
    assert first.slowed == [f"{STEP}('vibnet')"]

    confirmed = _check(gate, tmp_path / "confirmed", base, head, confirm=True)
    assert len(confirmed.failures) == 1
    assert "vibnet" in confirmed.failures[0]


def test_gate_small_slowdown_passes(gate, tmp_path):
    base = _results([1, 2], [0.030, 0.030])
    head = _results([1, 2], [0.044, 0.030])
    verdict = _check(gate, tmp_path, base, head, confirm=True)
    assert verdict.failures == []


def test_gate_new_failure_fails(gate, tmp_path):
    base = _results([1, 2], [0.030, 0.030])
    head = _results([1, None], [0.030, 0.030])
    verdict = _check(gate, tmp_path, base, head)
    assert len(verdict.failures) == 1
    assert "failed in the head" in verdict.failures[0]


def test_gate_skip_in_head_fails(gate, tmp_path):
    base = _results([1, 2], [0.030, 0.030])
    head = _results([1, float("nan")], [0.030, 0.030])
    assert len(_check(gate, tmp_path, base, head).failures) == 1


def test_gate_peakmem_never_fails(gate, tmp_path):
    base = _results([1, 2], [0.030, 0.030])
    head = _results([1, 2], [0.030, 0.030])
    head[PEAKMEM][0] = [6.0e9, 6.1e9]
    assert _check(gate, tmp_path, base, head).failures == []


def test_rerun_pattern_matches_exactly(gate):
    pattern = gate.rerun_pattern([f"{STEP}('vibnet')"])
    assert re.search(pattern, f"{STEP}('vibnet')")
    assert not re.search(pattern, f"{STEP}('dense')")
    assert not re.search(pattern, f"x{STEP}('vibnet')")


def test_gate_compares_fastest_samples(gate, tmp_path):
    columns = ["result", "params", "version", "started_at", "duration",
               "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75",
               "stats_number", "stats_repeat", "samples"]
    methods = [["'dense'"]]
    padding = [None] * 8

    def results(median: float, samples: list[float]) -> dict[str, list]:
        return {STEP: [[median], methods, "abc", *padding, [samples]]}

    folders = []
    for side, median, samples in (("base", 0.030, [0.029, 0.030, 0.060]), ("head", 0.060, [0.030, 0.060, 0.061])):
        folder = tmp_path / side / "machine"
        folder.mkdir(parents=True)
        data = {"result_columns": columns, "results": results(median, samples)}
        (folder / "abcd1234-existing-py.json").write_text(json.dumps(data), encoding="utf-8")
        folders.append(tmp_path / side)

    base = gate.load_results(gate.result_file(folders[0]))
    head = gate.load_results(gate.result_file(folders[1]))
    assert base[(STEP, "'dense'")].value == 0.029
    assert head[(STEP, "'dense'")].value == 0.030
    assert gate.compare(base, head, confirm_slowdowns=True).failures == []
