"""Executors that fan the runs of a suite out over processes, a Ray cluster or Slurm.

Every executor calls the same ``execute_run`` in its workers, which writes the
same atomic record into the same results folder, so the report does not care
where a run ran. The first worker that needs a shared dense or sparsity-phase
network builds it under a file lock. The others wait and then load it, so it
is trained once per configuration, not once per worker.

NOTE: the file locks are ``flock`` locks. On a shared file system they
coordinate hosts only where the file system supports ``flock`` across
hosts. That depends on the file system and its mount options, so check
yours before running Ray or Slurm workers on several hosts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.config import RunConfig, Suite, expand_runs
from benchmarks.store import RECORD_VERSION, ResultsStore

logger = logging.getLogger(__name__)

# How often the local driver checks whether its workers are still alive, in seconds.
_POLL_SECONDS = 0.5


class ExecutorUnavailable(RuntimeError):
    """An optional executor whose package is not installed; the message names the extra."""


@dataclass(frozen=True)
class WorkerSpec:
    """Settings a worker needs to execute runs: picklable, with no open files or tensors."""

    suite: dict[str, Any]
    results_dir: str
    data_dir: str | None
    download: bool
    device: str
    amp: bool
    executor: str
    # torch threads per worker, so that parallel workers do not oversubscribe the cores.
    threads: int = 1


_RUNNERS: dict[tuple, Any] = {}


def _runner_for(spec: WorkerSpec):
    """Return a SuiteRunner for ``spec``, reused across runs in one worker process."""
    from benchmarks.runner import RunOptions, SuiteRunner

    key = (spec.results_dir, spec.device, repr(sorted(spec.suite.items(), key=lambda kv: kv[0])))
    if key not in _RUNNERS:
        suite = Suite(**spec.suite)
        options = RunOptions(
            results_dir=Path(spec.results_dir),
            data_dir=Path(spec.data_dir) if spec.data_dir else None,
            download=spec.download,
            device=torch.device(spec.device),
            amp=spec.amp,
        )
        _RUNNERS.clear()
        _RUNNERS[key] = SuiteRunner(suite, options)
    return _RUNNERS[key]


def execute_run(spec: WorkerSpec, run_json: str) -> dict[str, str]:
    """Execute one run in this process unless it is recorded or claimed; return its outcome.

    Returns a dict with ``run_id``, ``label`` and ``status`` (ok, failed,
    unreachable, skipped or busy).
    """
    import benchmarks.methods  # noqa: F401  (registers the built-in methods in a fresh process)

    torch.set_num_threads(spec.threads)
    runner = _runner_for(spec)
    run = RunConfig.model_validate_json(run_json)
    store = runner.store
    store.ensure()
    with store.claim(run.run_id) as claimed:
        if not claimed:
            return {"run_id": run.run_id, "label": run.label, "status": "busy"}
        if store.has(run.run_id):
            return {"run_id": run.run_id, "label": run.label, "status": "skipped"}
        record = runner.execute(run)
        record["executor"] = {"name": spec.executor, "host": socket.gethostname(), "pid": os.getpid()}
        store.write(record)
    message = record.get("error", {}).get("message", "")
    return {"run_id": run.run_id, "label": run.label, "status": record["status"], "message": message}


def record_worker_failure(store: ResultsStore, run: RunConfig, executor: str, reason: str) -> None:
    """Write a failed record for a run whose worker died, unless a record already exists."""
    if store.read(run.run_id) is not None:
        return
    store.write({
        "version": RECORD_VERSION,
        "run_id": run.run_id,
        "config": run.model_dump(mode="json"),
        "status": "failed",
        "error": {"phase": "worker", "epoch": None, "message": reason},
        "executor": {"name": executor, "host": None, "pid": None},
    })


def pending_runs(suite: Suite, store: ResultsStore) -> list[RunConfig]:
    """Return the runs of ``suite`` without a successful record."""
    return [run for run in expand_runs(suite) if not store.has(run.run_id)]


# Local processes -------------------------------------------------------------


def _worker_loop(spec: WorkerSpec, tasks, results, worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the driver handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        item = tasks.get()
        if item is None:
            return
        index, run_json = item
        results.put(("start", worker_id, index, None))
        try:
            outcome = execute_run(spec, run_json)
        except Exception as error:  # reported to the driver, which records the failure
            outcome = {"status": "failed", "message": f"{type(error).__name__}: {error}"}
        results.put(("done", worker_id, index, outcome))


def run_local(spec: WorkerSpec, runs: list[RunConfig], workers: int) -> list[dict[str, str]]:
    """Execute ``runs`` in ``workers`` spawned processes; a dead worker fails only its own run.

    The driver replaces a worker that died and records its run as failed with
    the exit code, so the other runs finish and a rerun fills the gap.
    """
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for index, run in enumerate(runs):
        tasks.put((index, run.model_dump_json()))

    def start(worker_id: int):
        process = context.Process(target=_worker_loop, args=(spec, tasks, results, worker_id), daemon=True)
        process.start()
        return process

    processes = {worker_id: start(worker_id) for worker_id in range(workers)}
    current: dict[int, int | None] = {worker_id: None for worker_id in processes}
    outcomes: dict[int, dict[str, str]] = {}
    store = ResultsStore(Path(spec.results_dir))
    next_id = workers

    try:
        while len(outcomes) < len(runs):
            try:
                kind, worker_id, index, outcome = results.get(timeout=_POLL_SECONDS)
                if kind == "start":
                    current[worker_id] = index
                else:
                    current[worker_id] = None
                    outcomes[index] = outcome
                continue
            except queue.Empty:
                pass

            for worker_id, process in list(processes.items()):
                if process.is_alive():
                    continue
                index = current.pop(worker_id, None)
                del processes[worker_id]
                if index is not None and index not in outcomes:
                    reason = f"worker process {process.pid} exited with code {process.exitcode} during the run"
                    logger.error("run %s failed: %s", runs[index].label, reason)
                    record_worker_failure(store, runs[index], "local", reason)
                    outcomes[index] = {"run_id": runs[index].run_id, "label": runs[index].label, "status": "failed",
                                       "message": reason}
                if len(outcomes) + len([i for i in current.values() if i is not None]) < len(runs):
                    processes[next_id] = start(next_id)
                    current[next_id] = None
                    next_id += 1
    except BaseException:
        # Interrupted: stop the workers now; their runs stay unrecorded and a rerun resumes them.
        for process in processes.values():
            process.terminate()
        raise

    for _ in processes:
        tasks.put(None)
    for process in processes.values():
        process.join(timeout=30)
    return [outcomes[i] for i in range(len(runs))]


# Ray -------------------------------------------------------------------------


def run_ray(spec: WorkerSpec, runs: list[RunConfig], address: str | None, cpus: float, gpus: float) -> list[dict[str, str]]:
    """Submit each run as a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs.

    ``address`` is a running cluster's address; None starts a local Ray
    instance. A task whose worker dies is recorded as failed with Ray's reason.
    """
    try:
        import ray
    except ImportError as error:
        raise ExecutorUnavailable("--executor ray needs Ray; install it with: pip install 'vibbench[ray]'") from error

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(int(cpus), 1) * 2, include_dashboard=False, log_to_driver=False)

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(execute_run)
    futures = [remote.remote(spec, run.model_dump_json()) for run in runs]
    store = ResultsStore(Path(spec.results_dir))
    outcomes = []
    for run, future in zip(runs, futures):
        try:
            outcomes.append(ray.get(future))
        except Exception as error:  # RayTaskError, WorkerCrashedError and others
            reason = f"Ray task failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            logger.error("run %s failed: %s", run.label, reason)
            record_worker_failure(store, run, "ray", reason)
            outcomes.append({"run_id": run.run_id, "label": run.label, "status": "failed", "message": reason})
    return outcomes


# Slurm through submitit -----------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm settings; ``local`` runs the jobs with submitit's local executor (for tests)."""

    folder: str
    partition: str | None = None
    time_minutes: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    array_parallelism: int = 16
    local: bool = False


def run_slurm(spec: WorkerSpec, runs: list[RunConfig], options: SlurmOptions) -> list[dict[str, str]]:
    """Submit the runs as one Slurm job array through submitit and wait for them."""
    try:
        import submitit
    except ImportError as error:
        raise ExecutorUnavailable("--executor slurm needs submitit; install it with: pip install 'vibbench[slurm]'") from error

    if options.local:
        executor = submitit.LocalExecutor(folder=options.folder)
        executor.update_parameters(timeout_min=options.time_minutes)
    else:
        executor = submitit.AutoExecutor(folder=options.folder, cluster="slurm")
        parameters: dict[str, Any] = {
            "timeout_min": options.time_minutes,
            "gpus_per_node": options.gpus_per_task,
            "cpus_per_task": options.cpus_per_task,
            "slurm_array_parallelism": options.array_parallelism,
        }
        if options.partition:
            parameters["slurm_partition"] = options.partition
        executor.update_parameters(**parameters)

    try:
        jobs = executor.map_array(execute_run, [spec] * len(runs), [run.model_dump_json() for run in runs])
    except RuntimeError as error:  # submitit raises it when sbatch or srun is missing or rejects the job
        raise ExecutorUnavailable(f"--executor slurm: submitting the job array failed: {error}; "
                                  "run on a Slurm login node, or use --executor local") from error
    store = ResultsStore(Path(spec.results_dir))
    outcomes = []
    for run, job in zip(runs, jobs):
        try:
            outcomes.append(job.result())
        except Exception as error:  # submitit raises FailedJobError and UncompletedJobError
            reason = f"Slurm job {job.job_id} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            logger.error("run %s failed: %s", run.label, reason)
            record_worker_failure(store, run, "slurm", reason)
            outcomes.append({"run_id": run.run_id, "label": run.label, "status": "failed", "message": reason})
    return outcomes


def summarize(outcomes: list[dict[str, str]]) -> tuple[dict[str, int], list[str]]:
    """Return counts per status and one line per failed run."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    failed = [f"{o.get('label', o.get('run_id'))}: {o.get('message', '')}" for o in outcomes if o["status"] == "failed"]
    return counts, failed
