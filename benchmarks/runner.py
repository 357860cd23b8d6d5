"""Run a suite: dense pre-training, sparsity training, pruning, fine-tuning, measurement.

Phases per run, with one budget for every method:

1. dense: ``dense_epochs`` of plain training, cached per (model, dataset,
   seed, budget), so every method starts from the same network;
2. sparsify: ``sparsify_epochs`` with the method's penalty and schedule,
   cached per method setting, so all targets of one setting share it;
3. prune: to the method's natural operating point or to a target, with the
   method's own importance ranking;
4. fine-tune: ``finetune_epochs`` without penalty; the epoch with the lowest
   validation error is kept;
5. measure the pruned network and write the record.
"""

from __future__ import annotations

import logging
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import benchmarks.methods  # noqa: F401  (registers the built-in methods)
from benchmarks import measure
from benchmarks.budget import structured_budget, unstructured_budget
from benchmarks.config import RunConfig, Suite, expand_runs
from benchmarks.data import DataSplits, load_dataset
from benchmarks.methods.base import PruningMethod
from benchmarks.models import build_model
from benchmarks.registry import METHODS
from benchmarks.store import RECORD_VERSION, ResultsStore, StoreError
from benchmarks.export import ExportError, compact_checkpoint, sparse_state_dict_bytes, state_dict_bytes
from benchmarks.structure import UnsupportedModelError, check_prunable, find_sites, widths
from benchmarks.training import DivergedError, PhaseCheckpoint, evaluate, load_model_state, train_phase

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Settings of one invocation that do not change results on CPU."""

    results_dir: Path
    data_dir: Path | None = None
    download: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False
    # DataLoader worker processes for training batches; 0 gathers them in the main process.
    loader_workers: int = 0


@dataclass
class SuiteOutcome:
    """Counts of what a suite invocation did."""

    finished: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    unreachable: int = 0
    # Runs held by another process on the same results folder.
    busy: list[str] = field(default_factory=list)


def environment(device: torch.device) -> dict[str, Any]:
    """Return the software and hardware a record was produced on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": measure.device_name(device),
        "device_type": device.type,
        "cpu": measure.cpu_model(),
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
    }
    # Present in every record, None off the GPU, so tables can group by them.
    on_gpu = device.type == "cuda"
    info["gpu"] = torch.cuda.get_device_name(device) if on_gpu else None
    info["cuda"] = torch.version.cuda if on_gpu else None
    info["cudnn"] = torch.backends.cudnn.version() if on_gpu else None
    return info


def _git_commit() -> str | None:
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return output.stdout.strip() or None


def _units_counter(method: PruningMethod, dense_units: int):
    """Return a callable that counts surviving units (or non-zero weights) for the curves.

    For structured methods the count covers every site of the network, the
    ones the method cannot prune included, so that it compares with the dense
    network's ``dense_units`` in every phase.
    """

    def count(model: nn.Module) -> int:
        keep = method.natural_keep(model)
        if not method.structured:
            return int(sum(int(mask.sum()) for mask in keep.values()))
        return dense_units - int(sum(int((~mask.bool()).sum()) for mask in keep.values()))

    return count


def _dense_units(dense: nn.Module) -> int:
    return sum(site.units for site in find_sites(dense))


class SuiteRunner:
    """Executes the runs of a suite that have no record yet."""

    def __init__(self, suite: Suite, options: RunOptions) -> None:
        self.suite = suite
        self.options = options
        self.store = ResultsStore(options.results_dir)
        self._data: DataSplits | None = None
        self._sparse_cache: dict[str, tuple[nn.Module, dict]] = {}
        # Parameters and FLOPs of each dense network, keyed by its checkpoint id.
        self._dense_cost_cache: dict[str, dict[str, float]] = {}
        if options.device.type == "cuda":
            # Each pruned shape gets its own kernel search; latency timing warms up first.
            torch.backends.cudnn.benchmark = True

    @property
    def data(self) -> DataSplits:
        if self._data is None:
            self._data = load_dataset(
                self.suite.dataset,
                data_dir=self.options.data_dir,
                download=self.options.download,
                **self.suite.dataset_options,
            )
        return self._data

    def check_data(self) -> None:
        """Raise ``SuiteError`` when the suite does not fit its dataset (before any training)."""
        from benchmarks.config import SuiteError

        train_size = len(self.data.train)
        if self.suite.budget.batch_size > train_size:
            raise SuiteError(
                f"suite {self.suite.name}: budget.batch_size: {self.suite.budget.batch_size} is larger than the {train_size} training "
                f"images of dataset {self.suite.dataset!r}; use at most {train_size}"
            )

    def check_models(self, runs: list[RunConfig]) -> None:
        """Raise ``SuiteError`` before any training when a model of a structured method's run cannot be pruned.

        The message names the model, the offending layer and the reason
        (``benchmarks.structure.check_prunable``), so no run trains a network
        that the surgery would cut into a wrong compact one.
        """
        from benchmarks.config import SuiteError

        structured: dict[str, set[str]] = {}
        for run in runs:
            method = METHODS.get(run.method)
            if method.structured and method.prunes != "nothing":
                structured.setdefault(run.model, set()).add(run.method)
        example = torch.zeros(1, *self.data.spec.input_shape)
        problems = []
        for model_name, methods in structured.items():
            try:
                check_prunable(build_model(model_name, self.data.spec), example)
            except UnsupportedModelError as error:
                problems.append(f"model {model_name!r} cannot be pruned structurally by {', '.join(sorted(methods))}: "
                                f"{error}")
        if problems:
            raise SuiteError("; ".join(problems))

    def plan(self) -> str:
        """Return the runs, epochs and an estimated time, from a few measured training steps."""
        self.check_data()
        runs = expand_runs(self.suite)
        pending = [run for run in runs if not self.store.has(run.run_id)]
        self.check_models(pending)
        budget = self.suite.budget
        steps_per_epoch = -(-len(self.data.train) // budget.batch_size)
        if budget.max_batches_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, budget.max_batches_per_epoch)

        lines = [f"suite {self.suite.name}: {len(runs)} runs, {len(pending)} without a record",
                 f"budget per run: {budget.dense_epochs} dense + {budget.sparsify_epochs} sparsity + "
                 f"{budget.finetune_epochs} fine-tuning epochs of {steps_per_epoch} steps, batch {budget.batch_size}"]
        total_seconds = 0.0
        for model_name in self.suite.models:
            step = _measure_step_seconds(model_name, self.data, budget, self.options.device)
            model_runs = [r for r in pending if r.model == model_name]
            dense_keys = {r.dense_key() for r in model_runs}
            sparse_keys = {r.sparse_key() for r in model_runs}
            epochs = (len(dense_keys) * budget.dense_epochs + len(sparse_keys) * budget.sparsify_epochs
                      + len(model_runs) * budget.finetune_epochs)
            seconds = epochs * steps_per_epoch * step
            total_seconds += seconds
            lines.append(f"  {model_name}: {len(model_runs)} runs, {epochs} epochs, {step * 1e3:.1f} ms per step, "
                         f"about {_duration(seconds)} of training")
        lines.append(f"estimated training time: {_duration(total_seconds)} on {measure.device_name(self.options.device)} "
                     "(an estimate from measured steps; measurement and evaluation come on top)")
        return "\n".join(lines)

    def run(self) -> SuiteOutcome:
        """Run every missing run of the suite and return what happened."""
        self.check_data()
        outcome = SuiteOutcome()
        runs = expand_runs(self.suite)
        pending = [run for run in runs if not self.store.has(run.run_id)]
        self.check_models(pending)
        # Folders are created only once every check passed, so bad input leaves nothing behind.
        self.store.ensure()
        outcome.skipped = len(runs) - len(pending)
        if outcome.skipped:
            logger.info("%d of %d runs already have records and are skipped", outcome.skipped, len(runs))

        for run in tqdm(pending, desc=f"suite {self.suite.name}", unit="run", disable=None):
            with self.store.claim(run.run_id) as claimed:
                if not claimed:
                    logger.info("run %s is being run by another process; leaving it", run.label)
                    outcome.busy.append(run.label)
                    continue
                if self.store.has(run.run_id):  # finished by another process meanwhile
                    outcome.skipped += 1
                    continue
                record = self.execute(run)
                self.store.write(record)
            if record["status"] == "ok":
                outcome.finished += 1
            elif record["status"] == "unreachable":
                outcome.unreachable += 1
            else:
                outcome.failed.append(f"{run.label}: {record['error']['message']}")
        self._sparse_cache.clear()
        return outcome

    def _phase_checkpoint(self, kind: str, key: str) -> PhaseCheckpoint:
        return PhaseCheckpoint(
            save=lambda state: self.store.save_checkpoint(kind, key, state),
            load=lambda: self.store.load_checkpoint(kind, key),
        )

    def execute(self, run: RunConfig) -> dict[str, Any]:
        """Run one configuration and return its record; failures become failed records."""
        record: dict[str, Any] = {
            "version": RECORD_VERSION,
            "run_id": run.run_id,
            "config": run.model_dump(mode="json"),
            "environment": environment(self.options.device),
            "amp": self.options.amp,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        phase = "setup"
        try:
            method = METHODS.get(run.method)(run.params)
            record["method_info"] = {"structured": method.structured, "prunes": method.prunes, "strength": method.strength}

            phase = "dense"
            dense, dense_curves, dense_seconds = self._dense_network(run)

            phase = "sparsify"
            sparse, sparse_info = self._sparse_network(run, method, dense)

            phase = "prune"
            pruned, prune_info = self._prune(run, method, sparse, dense)
            record["prune"] = prune_info
            if pruned is None:
                record["status"] = "unreachable"
                return record
            if method.structured:
                # The compact network's units no longer change during fine-tuning.
                kept_units = sum(widths(pruned).values())

            phase = "finetune"
            device = self.options.device
            pruned = pruned.to(device)
            finetune = train_phase(
                pruned, self.data, run.budget, run.budget.finetune_epochs, run.seed, "finetune", device,
                units=(lambda _model: kept_units) if method.structured else _units_counter(method, 0),
                select_best=True, amp=self.options.amp, loader_workers=self.options.loader_workers,
                checkpoint=self._phase_checkpoint("partial-finetune", run.run_id),
            )
            final = method.finalize(pruned)
            self._save_compact(run, final)

            phase = "measure"
            record["metrics"] = self._measure(run, method, final, dense)
            record["curves"] = dense_curves + sparse_info["curves"] + finetune.curves
            record["best_finetune_epoch"] = finetune.best_epoch
            record["seconds"] = {
                "dense": dense_seconds,
                "sparsify": sparse_info["seconds"],
                "finetune": finetune.seconds,
            }
            record["status"] = "ok"
            self.store.delete_checkpoint("partial-finetune", run.run_id)
        except DivergedError as error:
            record["status"] = "failed"
            record["error"] = {"phase": error.phase, "epoch": error.epoch, "message": str(error)}
            logger.error("run %s failed: %s", run.label, error)
        except StoreError:  # a full disk or unusable folder would fail every later run too
            raise
        except Exception as error:  # one broken run must not stop the suite
            record["status"] = "failed"
            record["error"] = {"phase": phase, "epoch": None, "message": f"{type(error).__name__}: {error}",
                               "traceback": traceback.format_exc()}
            logger.error("run %s failed in phase %s: %s: %s", run.label, phase, type(error).__name__, error)
        return record

    # Phases ---------------------------------------------------------------

    def _dense_network(self, run: RunConfig) -> tuple[nn.Module, list[dict], float]:
        key = run.dense_key()
        # Other processes on this results folder wait here and then load the cache,
        # so the dense network is trained once per (model, dataset, seed, budget).
        with self.store.exclusive(f"dense-{key}"):
            torch.manual_seed(run.seed)
            model = build_model(run.model, self.data.spec)
            cached = self.store.load_checkpoint("dense", key)
            if cached is not None:
                model.load_state_dict(cached["state"])
                return model, cached["curves"], cached["seconds"]

            model = model.to(self.options.device)
            result = train_phase(model, self.data, run.budget, run.budget.dense_epochs, run.seed, "dense",
                                 self.options.device, amp=self.options.amp, loader_workers=self.options.loader_workers,
                                 checkpoint=self._phase_checkpoint("partial-dense", key))
            model = model.cpu()
            self.store.save_checkpoint("dense", key, {"state": model.state_dict(), "curves": result.curves,
                                                      "seconds": result.seconds})
            self.store.delete_checkpoint("partial-dense", key)
            return model, result.curves, result.seconds

    def _sparse_network(self, run: RunConfig, method: PruningMethod, dense: nn.Module) -> tuple[nn.Module, dict]:
        key = run.sparse_key()
        if key in self._sparse_cache:
            model, info = self._sparse_cache[key]
            return model, info

        with self.store.exclusive(f"sparse-{key}"):
            torch.manual_seed(run.seed)
            model = method.prepare(dense)
            cached = self.store.load_checkpoint("sparse", key)
            if cached is not None:
                load_model_state(model, cached["state"])
                info = {"curves": cached["curves"], "seconds": cached["seconds"]}
            else:
                device = self.options.device
                model = model.to(device)
                result = train_phase(
                    model, self.data, run.budget, run.budget.sparsify_epochs, run.seed, "sparsify", device,
                    penalty=method.penalty, on_epoch_end=method.on_epoch_end, units=_units_counter(method, _dense_units(dense)),
                    param_groups=method.param_groups(model), amp=self.options.amp, loader_workers=self.options.loader_workers,
                    checkpoint=self._phase_checkpoint("partial-sparse", key),
                )
                model = model.cpu()
                info = {"curves": result.curves, "seconds": result.seconds}
                self.store.save_checkpoint("sparse", key, {"state": model.state_dict(), **info})
                self.store.delete_checkpoint("partial-sparse", key)

        self._sparse_cache.clear()  # one sparse network at a time keeps memory flat
        self._sparse_cache[key] = (model, info)
        return model, info

    def _prune(self, run: RunConfig, method: PruningMethod, sparse: nn.Module, dense: nn.Module):
        input_shape = self.data.spec.input_shape
        example = torch.zeros(1, *input_shape)
        sparse = sparse.cpu().eval()

        if run.target is None:
            keep = method.natural_keep(sparse)
            info = {"kind": "natural", "target": None, "planned_fraction": None}
        else:
            dense_cost = self._dense_costs(run, dense)[run.target.metric]
            scores = method.scores(sparse)
            search = structured_budget if method.structured else unstructured_budget
            base = method.plain(sparse) if method.structured else sparse
            result = search(scores, base, input_shape, run.target.metric, run.target.fraction, dense_cost, run.ranking)
            info = {"kind": "target", "target": run.target.model_dump(), "planned_fraction": result.achieved,
                    "ranking": run.ranking}
            if result.keep is None:
                info["reason"] = result.reason
                return None, info
            keep = result.keep
        return method.apply(sparse, keep, example), info

    def _dense_costs(self, run: RunConfig, dense: nn.Module) -> dict[str, float]:
        """Return the dense network's parameters and fvcore FLOPs, computed once per dense network."""
        key = run.dense_key()
        if key not in self._dense_cost_cache:
            flops, _ = measure.flops_fvcore(dense, self.data.spec.input_shape)
            self._dense_cost_cache[key] = {"params": float(measure.count_params(dense)), "flops": float(flops)}
        return self._dense_cost_cache[key]

    def _measure(self, run: RunConfig, method: PruningMethod, model: nn.Module, dense: nn.Module) -> dict[str, Any]:
        device = self.options.device
        input_shape = self.data.spec.input_shape
        model = model.cpu().eval()

        counts = measure.count_flops(model, input_shape)
        flops, unsupported, nonzero_flops = counts.total, counts.unsupported, counts.nonzero
        dense_costs = self._dense_costs(run, dense)
        dense_flops, dense_params = int(dense_costs["flops"]), int(dense_costs["params"])
        params = measure.count_params(model)
        nonzero_params = measure.count_nonzero_params(model)
        effective_params = params if method.structured else nonzero_params
        effective_flops = flops if method.structured else nonzero_flops

        site_widths = widths(model) if method.structured or method.prunes == "nothing" else {}
        dense_widths = {site.name: site.units for site in find_sites(dense)}
        densities = {}
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                densities[name] = int(torch.count_nonzero(module.weight)) / module.weight.numel()

        model = model.to(device)
        latencies = [
            measure.timing_dict(measure.latency(model, input_shape, b, device, run.measure.min_run_time_s, run.measure.threads))
            for b in run.measure.latency_batch_sizes
        ]
        peak = {str(b): measure.peak_memory_bytes(model, input_shape, b, device) for b in run.measure.latency_batch_sizes}
        test_error = evaluate(model, self.data.test, device)
        val_error = evaluate(model, self.data.val, device)

        return {
            "test_error_pct": test_error,
            "val_error_pct": val_error,
            "params": params,
            "params_nonzero": nonzero_params,
            "dense_params": dense_params,
            "params_fraction": effective_params / dense_params,
            "flops_fvcore": flops,
            "flops_nonzero": nonzero_flops,
            "dense_flops_fvcore": dense_flops,
            "flops_fraction": effective_flops / dense_flops,
            "fvcore_unsupported_ops": unsupported,
            "activation_bytes": measure.activation_bytes(model, input_shape),
            "latency": latencies,
            "peak_memory_bytes": peak,
            "widths": site_widths,
            "dense_widths": dense_widths,
            # JSON records sort keys, so the network order of the sites is stored separately.
            "sites": list(dense_widths),
            "weight_density": densities,
            # torch.save of the state dict; masks keep dense tensors, so only the sparse form shrinks.
            "file_bytes": state_dict_bytes(model),
            "dense_file_bytes": state_dict_bytes(dense),
            "sparse_file_bytes": None if method.structured else sparse_state_dict_bytes(model),
        }

    def _save_compact(self, run: RunConfig, model: nn.Module) -> None:
        """Save the final network as checkpoints/compact-RUN_ID.pt, which ``benchmarks.load_compact`` rebuilds."""
        try:
            state = compact_checkpoint(model, self.data.spec.input_shape)
        except ExportError as error:
            logger.warning("run %s: the final network is not saved for export: %s", run.label, error)
            return
        self.store.save_checkpoint("compact", run.run_id, state)


def _duration(seconds: float) -> str:
    """Return seconds as a short readable duration: ``45 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _measure_step_seconds(model_name: str, data: DataSplits, budget, device: torch.device, steps: int = 5) -> float:
    """Return the median seconds of one plain training step of ``model_name`` at the suite's batch size."""
    import statistics

    model = build_model(model_name, data.spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = data.train.images[: budget.batch_size].to(device)
    labels = data.train.labels[: budget.batch_size].to(device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first step pays for allocation and kernel selection


def run_suite(suite: Suite, options: RunOptions) -> SuiteOutcome:
    """Run every missing run of ``suite`` into ``options.results_dir``."""
    return SuiteRunner(suite, options).run()
