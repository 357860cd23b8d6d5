"""Nothing is lost: kills and resumes, failed runs, tampered files, two processes, full disks and bad data.

The kill tests run the ``vibbench`` executable in subprocesses and send it
SIGTERM, SIGINT and SIGKILL while a phase is between two epochs (a partial
checkpoint exists), then compare the finished records with those of an
uninterrupted run. Every subprocess gets one intra-op thread
(``OMP_NUM_THREADS=1``): on a machine with two shared cores, two processes
with two threads each spend most of their time contending, and equal thread
counts keep CPU results bit-identical between the processes compared.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.config import RunConfig, Suite, expand_runs
from benchmarks.runner import RunOptions, SuiteOutcome, SuiteRunner
from benchmarks.store import ResultsStore, StoreError, config_hash

from fixtures_torchvision import write_mnist

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# This limit only stops a hung subprocess. No assertion depends on how long anything takes.
SUBPROCESS_DEADLINE_S = 600
POLL_INTERVAL_S = 0.01

# Five runs: dense, and VIBNet and magnitude pruning at their natural point and at half the dense FLOPs.
# Three dense and three sparsity epochs leave two epoch checkpoints per phase to interrupt.
RESUME_SUITE = {
    "name": "resume",
    "dataset": "mnist5k",
    "models": ["lenet300100"],
    "methods": [{"name": "dense"}, {"name": "vibnet"}, {"name": "magnitude"}],
    "seeds": [0],
    "targets": {"flops": [0.5]},
    "budget": {"dense_epochs": 3, "sparsify_epochs": 3, "finetune_epochs": 2, "max_batches_per_epoch": 5},
    "measure": {"min_run_time_s": 0.01, "latency_batch_sizes": [1], "threads": 1},
}
RESUME_RUNS = 5

# One run with every phase: dense, VIBNet training, pruning, fine-tuning.
TINY_SUITE = {
    "name": "tiny",
    "dataset": "mnist5k",
    "models": ["lenet300100"],
    "methods": [{"name": "vibnet"}],
    "seeds": [0],
    "budget": {"dense_epochs": 1, "sparsify_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 2},
    "measure": {"min_run_time_s": 0.01, "latency_batch_sizes": [1], "threads": 1},
}

# Record fields that are equal between processes on the CPU. Latency and wall times differ, so they are left out.
COMPARED_METRICS = [
    "test_error_pct",
    "val_error_pct",
    "params",
    "params_nonzero",
    "flops_fvcore",
    "flops_nonzero",
    "widths",
    "weight_density",
]
COMPARED_CURVE_FIELDS = ["phase", "epoch", "train_loss", "penalty", "val_error_pct", "units"]

SUMMARY = re.compile(r"(\d+) runs finished, (\d+) skipped")


# Helpers ----------------------------------------------------------------


def vibbench_command() -> list[str]:
    """Return the installed console script, or the module when the script is missing."""
    script = Path(sys.executable).parent / "vibbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "benchmarks.cli"]


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def start_vibbench(suite: Path, results: Path, log: Path) -> subprocess.Popen:
    """Start ``vibbench run`` on the CPU with stdout and stderr going to ``log``."""
    command = [*vibbench_command(), "run", str(suite), "--results-dir", str(results), "--device", "cpu", "--no-report"]
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, cwd=suite.parent, env=SUBPROCESS_ENV)


def finish(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    """Wait for ``process`` and return its exit status and stderr. A process that hangs is killed."""
    try:
        returncode = process.wait(timeout=SUBPROCESS_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return returncode, log.read_text(encoding="utf-8")


def wait_until(process: subprocess.Popen, condition) -> bool:
    """Poll ``condition`` until it is true (return True) or the process exits first (return False)."""
    deadline = time.monotonic() + SUBPROCESS_DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(POLL_INTERVAL_S)
    process.kill()
    raise AssertionError(f"process {process.pid} reached neither the state nor its end")


def partial_checkpoints(results: Path, kind: str = "", since_ns: int = 0) -> list[str]:
    """Return the names of the epoch checkpoints of phase ``kind`` last written after ``since_ns``."""
    found = []
    for path in (results / "checkpoints").glob(f"partial-{kind}*.pt"):
        try:
            if path.stat().st_mtime_ns > since_ns:
                found.append(path.name)
        except FileNotFoundError:  # The phase ended and deleted the file after the glob listed it.
            pass
    return sorted(found)


def record_files(results: Path) -> list[Path]:
    return sorted((results / "runs").glob("*.json"))


def temporary_files(results: Path) -> list[str]:
    """Return the leftover temporary files (``.NAME.XXXX.tmp``) of records and checkpoints."""
    return sorted(str(path.relative_to(results)) for path in results.glob("*/*.tmp"))


def load_records(results: Path) -> dict[str, dict]:
    """Return every record under ``results`` keyed by its file name's run id."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in record_files(results)}


def metric_table(records: dict[str, dict], name: str) -> dict[str, object]:
    return {run_id: record.get("metrics", {}).get(name) for run_id, record in records.items()}


def curve_table(records: dict[str, dict], name: str) -> dict[str, list]:
    return {run_id: [point[name] for point in record.get("curves", [])] for run_id, record in records.items()}


def summary_counts(stderr: str) -> tuple[int, int]:
    """Return (finished, skipped) from the summary line that ``vibbench run`` logs."""
    match = SUMMARY.search(stderr)
    assert match is not None, stderr
    return int(match.group(1)), int(match.group(2))


@pytest.fixture
def one_thread():
    """Run in-process training with one intra-op thread, restoring the count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Kill and resume --------------------------------------------------------


@dataclass
class Interruption:
    """What one interrupted ``vibbench run`` left behind."""

    signal_name: str
    # False when the process ended before the signal was sent.
    landed: bool
    returncode: int
    stderr: str
    partials_left: list[str] = field(default_factory=list)
    temporary_left: list[str] = field(default_factory=list)
    records_left: dict[str, bytes] = field(default_factory=dict)
    # stderr of the process started next on the same results folder.
    next_stderr: str = ""


@dataclass
class ResumeOutcome:
    reference_dir: Path
    reference_status: int
    reference_stderr: str
    resumed_dir: Path
    final_status: int
    final_stderr: str
    interruptions: list[Interruption]


def _interrupt(suite: Path, results: Path, log: Path, signal_number: int, condition) -> Interruption:
    """Start ``vibbench run``, send ``signal_number`` once ``condition(start_ns)`` is true, and wait for the end.

    ``condition`` looks only at files written after ``start_ns``, so a
    checkpoint that an earlier process left never triggers the signal while
    the new process is still starting.
    """
    start_ns = time.time_ns()
    process = start_vibbench(suite, results, log)
    wait_until(process, lambda: condition(start_ns))
    landed = process.poll() is None
    if landed:
        process.send_signal(signal_number)
    returncode, stderr = finish(process, log)
    return Interruption(
        signal_name=signal.Signals(signal_number).name,
        landed=landed,
        returncode=returncode,
        stderr=stderr,
        partials_left=partial_checkpoints(results),
        temporary_left=temporary_files(results),
        records_left={path.name: path.read_bytes() for path in record_files(results)},
    )


@pytest.fixture(scope="module")
def resume(tmp_path_factory) -> ResumeOutcome:
    """Run the resume suite uninterrupted, and beside it interrupted three times and then to the end.

    The interrupted sequence: SIGTERM once a dense epoch checkpoint exists,
    SIGINT once a sparsity epoch checkpoint exists, SIGKILL once two records
    and any epoch checkpoint exist, then a run to completion.
    """
    folder = tmp_path_factory.mktemp("resume")
    suite = write_suite(folder, RESUME_SUITE)
    reference_dir, resumed_dir = folder / "reference", folder / "resumed"
    reference = start_vibbench(suite, reference_dir, folder / "reference.log")

    steps = [
        (signal.SIGTERM, lambda start_ns: bool(partial_checkpoints(resumed_dir, "dense", start_ns))),
        (signal.SIGINT, lambda start_ns: bool(partial_checkpoints(resumed_dir, "sparse", start_ns))),
        (
            signal.SIGKILL,
            lambda start_ns: len(record_files(resumed_dir)) >= 2 and bool(partial_checkpoints(resumed_dir, "", start_ns)),
        ),
    ]
    interruptions = []
    try:
        for index, (signal_number, condition) in enumerate(steps):
            log = folder / f"interrupted-{index}.log"
            interruptions.append(_interrupt(suite, resumed_dir, log, signal_number, condition))

        final_log = folder / "final.log"
        final_status, final_stderr = finish(start_vibbench(suite, resumed_dir, final_log), final_log)
    except BaseException:
        reference.kill()
        raise
    logs = [interruption.stderr for interruption in interruptions[1:]] + [final_stderr]
    for interruption, next_stderr in zip(interruptions, logs):
        interruption.next_stderr = next_stderr

    reference_status, reference_stderr = finish(reference, folder / "reference.log")
    return ResumeOutcome(reference_dir, reference_status, reference_stderr, resumed_dir, final_status,
                         final_stderr, interruptions)


def test_reference_exit_status(resume):
    assert resume.reference_status == 0, resume.reference_stderr


def test_reference_record_count(resume):
    assert len(record_files(resume.reference_dir)) == RESUME_RUNS


def _graceful(resume: ResumeOutcome, signal_name: str) -> Interruption:
    interruption = next(i for i in resume.interruptions if i.signal_name == signal_name)
    if not interruption.landed:
        pytest.skip(f"the process finished before {signal_name} was sent")
    return interruption


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_interrupt_exit_status(resume, signal_name):
    interruption = _graceful(resume, signal_name)

    expected = {"SIGTERM": 143, "SIGINT": 130}[signal_name]

    assert interruption.returncode == expected, interruption.stderr


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_interrupt_message(resume, signal_name):
    interruption = _graceful(resume, signal_name)
    last_line = interruption.stderr.strip().splitlines()[-1]

    assert last_line == "vibbench: interrupted; finished runs are recorded, rerun the same command to resume"
    assert "Traceback" not in interruption.stderr


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_interrupt_no_temporary_files(resume, signal_name):
    interruption = _graceful(resume, signal_name)

    assert interruption.temporary_left == []


def test_kill_status(resume):
    interruption = next(i for i in resume.interruptions if i.signal_name == "SIGKILL")
    if not interruption.landed:
        pytest.skip("the process finished before SIGKILL was sent")

    assert interruption.returncode == -signal.SIGKILL


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_resume_from_epoch_checkpoint(resume, signal_name):
    """A phase interrupted between epochs continues from its last epoch checkpoint in the next process."""
    interruption = next(i for i in resume.interruptions if i.signal_name == signal_name)
    phases = {"dense": "dense", "sparse": "sparsify", "finetune": "finetune"}
    left = [name.split("-")[1] for name in interruption.partials_left]
    if not left:
        pytest.skip(f"{interruption.signal_name} did not land between two epochs of a phase")

    for kind in left:
        assert re.search(rf"{phases[kind]}: resuming after epoch \d+ of \d+", interruption.next_stderr), kind


def test_final_exit_status(resume):
    assert resume.final_status == 0, resume.final_stderr


def test_final_skips_recorded(resume):
    recorded = len(resume.interruptions[-1].records_left)

    assert summary_counts(resume.final_stderr) == (RESUME_RUNS - recorded, recorded)


def test_recorded_runs_unchanged(resume):
    """Records written before the kill are neither rewritten nor duplicated by the resumed process."""
    before = resume.interruptions[-1].records_left
    after = {path.name: path.read_bytes() for path in record_files(resume.resumed_dir)}

    assert {name: after.get(name) for name in before} == before


def test_resumed_run_ids(resume):
    assert sorted(load_records(resume.resumed_dir)) == sorted(load_records(resume.reference_dir))


def test_resumed_records_consistent(resume):
    records = load_records(resume.resumed_dir)

    assert {run_id: record["run_id"] for run_id, record in records.items()} == {run_id: run_id for run_id in records}
    assert {run_id: config_hash(record["config"]) for run_id, record in records.items()} == {r: r for r in records}


def test_resumed_status_ok(resume):
    records = load_records(resume.resumed_dir)

    assert {run_id: record["status"] for run_id, record in records.items()} == {run_id: "ok" for run_id in records}


@pytest.mark.parametrize("name", COMPARED_METRICS)
def test_resumed_metric(resume, name):
    assert metric_table(load_records(resume.resumed_dir), name) == metric_table(load_records(resume.reference_dir), name)


@pytest.mark.parametrize("name", COMPARED_CURVE_FIELDS)
def test_resumed_curves(resume, name):
    assert curve_table(load_records(resume.resumed_dir), name) == curve_table(load_records(resume.reference_dir), name)


def test_resumed_best_epoch(resume):
    resumed, reference = load_records(resume.resumed_dir), load_records(resume.reference_dir)

    assert {k: r.get("best_finetune_epoch") for k, r in resumed.items()} == {
        k: r.get("best_finetune_epoch") for k, r in reference.items()
    }


def test_resumed_prune_info(resume):
    resumed, reference = load_records(resume.resumed_dir), load_records(resume.reference_dir)

    assert {k: r.get("prune") for k, r in resumed.items()} == {k: r.get("prune") for k, r in reference.items()}


# Two processes on one results folder -----------------------------------


@dataclass
class ConcurrentOutcome:
    results: Path
    statuses: list[int]
    stderrs: list[str]


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory) -> ConcurrentOutcome:
    """Run the resume suite with two processes started together on one results folder."""
    folder = tmp_path_factory.mktemp("concurrent")
    suite = write_suite(folder, RESUME_SUITE)
    results = folder / "results"
    logs = [folder / f"process-{index}.log" for index in range(2)]
    processes = [start_vibbench(suite, results, log) for log in logs]
    finished = [finish(process, log) for process, log in zip(processes, logs)]
    return ConcurrentOutcome(results, [status for status, _ in finished], [stderr for _, stderr in finished])


def test_concurrent_exit_status(concurrent):
    assert concurrent.statuses == [0, 0], concurrent.stderrs


def test_concurrent_record_count(concurrent):
    assert len(record_files(concurrent.results)) == RESUME_RUNS


def test_concurrent_run_ids(concurrent):
    records = load_records(concurrent.results)

    assert {run_id: record["run_id"] for run_id, record in records.items()} == {run_id: run_id for run_id in records}


def test_concurrent_status_ok(concurrent):
    records = load_records(concurrent.results)

    assert {run_id: record["status"] for run_id, record in records.items()} == {run_id: "ok" for run_id in records}


def test_concurrent_runs_once(concurrent):
    """Each run executes in exactly one of the two processes."""
    finished = [summary_counts(stderr)[0] for stderr in concurrent.stderrs]

    assert sum(finished) == RESUME_RUNS


def test_concurrent_no_temporary_files(concurrent):
    assert temporary_files(concurrent.results) == []


@pytest.mark.parametrize("name", ["test_error_pct", "params", "flops_fvcore", "widths"])
def test_concurrent_metric(concurrent, resume, name):
    """Sharing the cached dense and sparse networks between processes changes no result."""
    expected = metric_table(load_records(resume.reference_dir), name)

    assert metric_table(load_records(concurrent.results), name) == expected


# Failed runs ------------------------------------------------------------

# lambda = 1e40 times a group norm exceeds float32's range (3.4e38), so the loss is
# infinite at the first sparsity step. The weights are NaN after that step, so the
# error may report the loss as NaN.
DIVERGING_SUITE = {
    **TINY_SUITE,
    "name": "diverging",
    "methods": [{"name": "dense"}, {"name": "group_lasso", "params": {"strength": 1.0e40}}],
}
DIVERGING_LABEL = "lenet300100/group_lasso/natural/seed0"


@dataclass
class DivergingOutcome:
    results: Path
    first: tuple[int, str]
    first_records: dict[str, dict]
    first_bytes: dict[str, bytes]
    second: tuple[int, str]


@pytest.fixture(scope="module")
def diverging(tmp_path_factory) -> DivergingOutcome:
    """Run the diverging suite twice on one results folder."""
    folder = tmp_path_factory.mktemp("diverging")
    suite = write_suite(folder, DIVERGING_SUITE)
    results = folder / "results"

    first = finish(start_vibbench(suite, results, folder / "first.log"), folder / "first.log")
    first_records = load_records(results)
    first_bytes = {path.name: path.read_bytes() for path in record_files(results)}
    second = finish(start_vibbench(suite, results, folder / "second.log"), folder / "second.log")
    return DivergingOutcome(results, first, first_records, first_bytes, second)


def _by_method(records: dict[str, dict]) -> dict[str, dict]:
    return {record["config"]["method"]: record for record in records.values()}


def test_failed_exit_status(diverging):
    status, stderr = diverging.first

    assert status == 1, stderr


def test_failed_summary(diverging):
    _, stderr = diverging.first
    expected = rf"failed: {re.escape(DIVERGING_LABEL)}: loss became (nan|inf) in phase 'sparsify' at epoch 0$"

    assert re.search(expected, stderr.splitlines()[-1]), stderr
    assert "Traceback" not in stderr


def test_failed_record_status(diverging):
    records = _by_method(diverging.first_records)

    assert {method: record["status"] for method, record in records.items()} == {"dense": "ok", "group_lasso": "failed"}


def test_failed_record_error(diverging):
    error = _by_method(diverging.first_records)["group_lasso"]["error"]

    assert error["phase"] == "sparsify"
    assert error["epoch"] == 0


def test_rerun_retries_failed(diverging):
    status, stderr = diverging.second

    assert status == 1, stderr
    assert summary_counts(stderr) == (0, 1)
    assert stderr.count(f"run {DIVERGING_LABEL} failed") == 1


def test_rerun_keeps_ok_record(diverging):
    dense_id = _by_method(diverging.first_records)["dense"]["run_id"]
    after = (diverging.results / "runs" / f"{dense_id}.json").read_bytes()

    assert after == diverging.first_bytes[f"{dense_id}.json"]


# Records and checkpoints that were tampered with ------------------------


class ShellPayload:
    """Pickles as a call of ``os.system``: unpickling it runs ``command``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Tripwire:
    """A custom class whose unpickling creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def tiny_run() -> RunConfig:
    return expand_runs(Suite(**TINY_SUITE))[0]


def run_tiny(results: Path) -> SuiteOutcome:
    """Run the tiny suite in this process and return its outcome."""
    return SuiteRunner(Suite(**TINY_SUITE), RunOptions(results_dir=results)).run()


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> Path:
    """Return a results folder that contains the tiny suite's record and its dense and sparse checkpoints."""
    results = tmp_path_factory.mktemp("tiny") / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = run_tiny(results)
    finally:
        torch.set_num_threads(threads)
    assert outcome.finished == 1
    return results


@pytest.fixture
def tiny_copy(tiny_results, tmp_path) -> Path:
    """Return a private copy of the tiny suite's results folder."""
    copied = tmp_path / "results"
    shutil.copytree(tiny_results, copied)
    return copied


def _payload_checkpoint(path: Path, kind: str, key: str, marker: Path, case: str) -> None:
    """Write a checkpoint stamped with the right kind and key whose content is ``case``."""
    state = {"state": {"weight": torch.zeros(2)}, "curves": [], "seconds": 0.0, "key": key, "kind": kind}
    if case == "shell":
        state["payload"] = ShellPayload(f"touch {shlex.quote(str(marker))}")
    elif case == "custom_class":
        state["payload"] = Tripwire(marker)
    elif case == "other_key":
        state["key"] = "0" * 16
    elif case == "other_kind":
        state["kind"] = "sparse"
    elif case == "tensor":
        state = torch.zeros(3)
    torch.save(state, path)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:100])


CHECKPOINT_CASES = ["shell", "custom_class", "other_key", "other_kind", "tensor", "truncated"]


def test_shell_payload_live(tmp_path):
    """The payload runs when loaded without weights_only, so its absence elsewhere means it was blocked."""
    marker = tmp_path / "marker"
    path = tmp_path / "payload.pt"
    _payload_checkpoint(path, "dense", "0" * 16, marker, "shell")

    torch.load(path, weights_only=False)

    assert marker.exists()


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_tampered_checkpoint_rejected(tmp_path, caplog, case):
    store = ResultsStore(tmp_path / "results")
    store.ensure()
    key = "a" * 16
    marker = tmp_path / "marker"
    _payload_checkpoint(store.checkpoint_path("dense", key), "dense", key, marker, case)

    with caplog.at_level(logging.WARNING, logger="benchmarks.store"):
        loaded = store.load_checkpoint("dense", key)

    assert loaded is None
    assert not marker.exists()
    assert "rejecting checkpoint" in caplog.text


@pytest.mark.parametrize("case", ["shell", "custom_class", "other_key"])
def test_tampered_dense_retrained(tiny_results, tiny_copy, tmp_path, caplog, one_thread, case):
    run = tiny_run()
    store = ResultsStore(tiny_copy)
    marker = tmp_path / "marker"
    _payload_checkpoint(store.checkpoint_path("dense", run.dense_key()), "dense", run.dense_key(), marker, case)
    store.record_path(run.run_id).unlink()

    with caplog.at_level(logging.WARNING, logger="benchmarks.store"):
        outcome = run_tiny(tiny_copy)

    original = ResultsStore(tiny_results).read(run.run_id)
    rerun = store.read(run.run_id)
    assert not marker.exists()
    assert "rejecting checkpoint" in caplog.text
    assert outcome.finished == 1
    assert store.load_checkpoint("dense", run.dense_key()) is not None
    assert rerun["metrics"]["test_error_pct"] == original["metrics"]["test_error_pct"]
    assert rerun["curves"] == original["curves"]


def test_tampered_partial_retrained(tiny_results, tiny_copy, tmp_path, caplog, one_thread):
    """A payload in an epoch checkpoint is rejected and the phase starts from its first epoch."""
    run = tiny_run()
    store = ResultsStore(tiny_copy)
    marker = tmp_path / "marker"
    store.record_path(run.run_id).unlink()
    _payload_checkpoint(store.checkpoint_path("partial-finetune", run.run_id), "partial-finetune", run.run_id,
                        marker, "shell")

    with caplog.at_level(logging.WARNING, logger="benchmarks.store"):
        outcome = run_tiny(tiny_copy)

    original = ResultsStore(tiny_results).read(run.run_id)
    assert not marker.exists()
    assert "rejecting checkpoint" in caplog.text
    assert outcome.finished == 1
    assert store.read(run.run_id)["curves"] == original["curves"]


@pytest.mark.parametrize("case", ["config", "run_id", "truncated"])
def test_edited_record_rerun(tiny_results, tiny_copy, caplog, one_thread, case):
    run = tiny_run()
    store = ResultsStore(tiny_copy)
    path = store.record_path(run.run_id)
    record = json.loads(path.read_text(encoding="utf-8"))
    edited = copy.deepcopy(record)
    if case == "config":
        edited["config"]["seed"] = 7
        path.write_text(json.dumps(edited), encoding="utf-8")
    elif case == "run_id":
        edited["run_id"] = "f" * 16
        path.write_text(json.dumps(edited), encoding="utf-8")
    else:
        path.write_text(json.dumps(record)[:200], encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="benchmarks.store"):
        outcome = run_tiny(tiny_copy)

    rerun = json.loads(path.read_text(encoding="utf-8"))
    assert "ignoring" in caplog.text
    assert outcome.finished == 1
    assert config_hash(rerun["config"]) == run.run_id
    assert rerun["metrics"]["test_error_pct"] == record["metrics"]["test_error_pct"]


def test_unreachable_not_repeated(tmp_path, one_thread):
    """A target that no pruning can reach is a finished outcome: a rerun skips it."""
    suite = Suite(**{**TINY_SUITE, "targets": {"params": [1e-6]}})
    options = RunOptions(results_dir=tmp_path / "results")
    first = SuiteRunner(suite, options).run()

    second = SuiteRunner(suite, options).run()

    assert (first.finished, first.unreachable) == (1, 1)
    assert second.skipped == 2
    assert second.unreachable == 0


# Results folders and full disks -----------------------------------------


def _assert_one_line_error(status: int, stderr: str, expected: str) -> None:
    lines = stderr.splitlines()
    assert status == 2
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vibbench: error: ")
    assert expected in lines[0]


def test_results_dir_is_file(cli, tmp_path):
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results.txt"
    results.write_text("not a folder\n", encoding="utf-8")

    status, _, stderr = cli("run", str(suite), "--results-dir", str(results), "--device", "cpu", "--no-report")

    _assert_one_line_error(status, stderr, f"results folder {results} is not usable")
    assert results.read_text(encoding="utf-8") == "not a folder\n"


def test_results_dir_unreadable(cli, tmp_path, monkeypatch):
    # Root ignores permission bits, so the permission check itself is made to fail.
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    real_access = os.access
    monkeypatch.setattr("benchmarks.store.os.access",
                        lambda path, mode: False if str(path).startswith(str(results)) else real_access(path, mode))

    status, _, stderr = cli("run", str(suite), "--results-dir", str(results), "--device", "cpu", "--no-report")

    _assert_one_line_error(status, stderr, "is not usable: permission denied")


def _fail_with_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _HalfWriter:
    """A text file whose ``write`` stores half of the text and then fails as on a full disk."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, text: str) -> int:
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        _fail_with_enospc()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._handle.__exit__(*exc_info)


def _simulate_full_disk(monkeypatch, where: str) -> None:
    import benchmarks.store

    if where == "fsync":
        monkeypatch.setattr(benchmarks.store.os, "fsync", _fail_with_enospc)
    else:
        real_fdopen = os.fdopen
        monkeypatch.setattr(benchmarks.store.os, "fdopen", lambda *a, **k: _HalfWriter(real_fdopen(*a, **k)))


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_record(tmp_path, monkeypatch, where):
    store = ResultsStore(tmp_path / "results")
    store.ensure()
    record = {"run_id": "b" * 16, "config": {}, "status": "ok"}
    _simulate_full_disk(monkeypatch, where)

    with pytest.raises(StoreError) as raised:
        store.write(record)

    assert "No space left on device" in str(raised.value)
    assert f"cannot write record {store.record_path('b' * 16)}" in str(raised.value)
    assert _leftovers(store.runs_dir) == []


def test_full_disk_cli(cli, tmp_path, monkeypatch, one_thread):
    """A record that cannot be written ends the suite with one line and exit 2, leaving no partial file."""
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    _simulate_full_disk(monkeypatch, "fsync")

    status, _, stderr = cli("run", str(suite), "--results-dir", str(results), "--device", "cpu", "--no-report")

    _assert_one_line_error(status, stderr, "No space left on device")
    assert _leftovers(results / "runs") == []


def _checkpoints_to_full_disk(monkeypatch) -> None:
    """Make ``torch.save`` in the results store write to ``/dev/full``, where every write fails with ENOSPC.

    The replacement honours both ways of calling ``torch.save``: a file name
    (torch's own writer raises RuntimeError) and a file object (Python's
    ``write`` raises OSError).
    """
    import benchmarks.store

    if not os.path.exists("/dev/full"):
        pytest.skip("this system has no /dev/full to simulate a full disk with")
    real_save = torch.save

    def save_to_full_disk(obj, target, *args, **kwargs):
        if isinstance(target, (str, os.PathLike)):
            real_save(obj, "/dev/full", *args, **kwargs)
            return
        with open("/dev/full", "wb") as full:
            real_save(obj, full, *args, **kwargs)
            full.flush()

    monkeypatch.setattr(benchmarks.store.torch, "save", save_to_full_disk)


def test_full_disk_checkpoint(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results")
    store.ensure()
    _checkpoints_to_full_disk(monkeypatch)

    with pytest.raises(StoreError) as raised:
        store.save_checkpoint("dense", "c" * 16, {"state": {"weight": torch.zeros(1000)}})

    assert "No space left on device" in str(raised.value)
    assert _leftovers(store.checkpoints_dir) == []


def test_full_disk_checkpoint_cli(cli, tmp_path, monkeypatch, one_thread):
    """A checkpoint that cannot be written stops the suite with a clear error instead of failing every run."""
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    _checkpoints_to_full_disk(monkeypatch)

    status, _, stderr = cli("run", str(suite), "--results-dir", str(results), "--device", "cpu", "--no-report")

    _assert_one_line_error(status, stderr, "No space left on device")
    assert _leftovers(results / "runs") == []


# Truncated dataset files ------------------------------------------------

MNIST_SUITE = {**TINY_SUITE, "name": "mnist-files", "dataset": "mnist", "dataset_options": {"val_size": 10},
               "methods": [{"name": "dense"}], "budget": {**TINY_SUITE["budget"], "batch_size": 16}}
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_mnist_files_valid(cli, tmp_path):
    """The tiny idx files load, so the failures below come from the truncation alone."""
    write_mnist(tmp_path / "data", train=48, test=16)
    suite = write_suite(tmp_path, MNIST_SUITE)

    status, stdout, stderr = cli("run", str(suite), "--dry-run", "--data-dir", str(tmp_path / "data"),
                                 "--results-dir", str(tmp_path / "results"), "--device", "cpu")

    assert status == 0, stderr
    assert stdout.startswith("suite mnist-files: 1 runs")


@pytest.mark.parametrize("name", MNIST_FILES)
def test_mnist_truncated(cli, tmp_path, name):
    raw = write_mnist(tmp_path / "data", train=48, test=16)
    content = (raw / name).read_bytes()
    (raw / name).write_bytes(content[: len(content) // 2])
    suite = write_suite(tmp_path, MNIST_SUITE)

    status, _, stderr = cli("run", str(suite), "--data-dir", str(tmp_path / "data"),
                            "--results-dir", str(tmp_path / "results"), "--device", "cpu", "--no-report")

    _assert_one_line_error(status, stderr, name)
    assert "truncated" in stderr
