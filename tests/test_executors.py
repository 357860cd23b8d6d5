"""Executors: local workers, Ray and submitit give the same records as a serial run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

VIBBENCH = [sys.executable, "-m", "benchmarks.cli"]

SUITE = """
name: executors
dataset: mnist5k
models: [lenet300100]
seeds: [0]
budget:
  dense_epochs: 1
  sparsify_epochs: 1
  finetune_epochs: 1
  batch_size: 100
  max_batches_per_epoch: 3
targets: {flops: [0.5]}
methods:
  - name: dense
  - name: vibnet
  - name: magnitude
measure: {latency_batch_sizes: [1], min_run_time_s: 0.01}
"""

# Fields that legitimately differ between executions: timings, hosts, processes.
_VOLATILE = {"latency", "peak_memory_bytes"}


# One thread everywhere: a serial run and a worker then sum in the same order, so
# their floating-point results are equal bit for bit.
_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _run(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **_ENV, **(env_extra or {})}
    return subprocess.run(VIBBENCH + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(results: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((results / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        metrics = {k: v for k, v in record.get("metrics", {}).items() if k not in _VOLATILE}
        curves = [{k: v for k, v in c.items()} for c in record.get("curves", [])]
        found[record["run_id"]] = {"status": record["status"], "metrics": metrics, "curves": curves}
    return found


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "executors.yaml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def serial(suite_file, tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("serial")
    done = _run(["run", str(suite_file), "--results-dir", str(results), "--no-report"], results)
    assert done.returncode == 0, done.stderr
    return _metrics(results)


def test_serial_suite_has_records(serial):
    assert len(serial) == 5
    assert all(r["status"] == "ok" for r in serial.values())


def test_local_workers_match_serial(suite_file, serial, tmp_path):
    done = _run(["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report", "--workers", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _metrics(tmp_path) == serial


def test_records_name_executor(suite_file, tmp_path):
    done = _run(["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report", "--workers", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    for path in (tmp_path / "runs").glob("*.json"):
        executor = json.loads(path.read_text())["executor"]
        assert executor["name"] == "local"
        assert executor["host"]


def test_ray_matches_serial(suite_file, serial, tmp_path):
    pytest.importorskip("ray")
    done = _run(["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report", "--executor", "ray"], tmp_path,
                {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metrics(tmp_path) == serial


def test_submitit_matches_serial(suite_file, serial, tmp_path):
    pytest.importorskip("submitit")
    done = _run(["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report", "--executor", "slurm",
                 "--slurm-local"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metrics(tmp_path) == serial


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _holds_run_claim(pid: int) -> bool:
    """Return True when process ``pid`` has a run's claim file open (16 hex digits, not a cache lock)."""
    try:
        targets = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return False
    return any("/.locks/" in t and len(Path(t).stem) == 16 and "-" not in Path(t).stem for t in targets)


def test_killed_worker_fails_one_run(suite_file, serial, tmp_path):
    env = {**os.environ, **_ENV}
    args = VIBBENCH + ["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report", "--workers", "2"]
    driver = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Wait until a worker has claimed a run, then kill that worker.
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        holding = [p for p in _children(driver.pid) if _holds_run_claim(p)]
        if holding:
            victim = holding[0]
        else:
            time.sleep(0.02)
    assert victim is not None, "no worker started"
    os.kill(victim, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=600)

    records = _metrics(tmp_path)
    statuses = sorted(r["status"] for r in records.values())
    assert driver.returncode == 1, stderr[-2000:]
    assert statuses.count("failed") == 1
    assert len(records) == len(serial)
    assert "exited with code" in stderr

    rerun = _run(["run", str(suite_file), "--results-dir", str(tmp_path), "--no-report"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _metrics(tmp_path) == serial
