"""Run the LeNet-5 rows of paper-mnist on random MNIST-shaped data and print step times, latency and memory.

The check needs no dataset files: it swaps paper-mnist's dataset for
``synthetic_mnist`` (random 1x28x28 images, 10 classes), keeps the suite's
batch size, optimizer and method settings, and shortens every phase to a
few epochs. It runs through the same harness as ``vibbench run``, so the
numbers are those a real run would record, and ends with an estimate of
the training time of the full LeNet-5 rows on this device.

Examples:
    python scripts/gpu_check.py                          # the GPU when there is one, else the CPU
    python scripts/gpu_check.py --device cuda --amp      # bfloat16 autocast on the GPU
    python scripts/gpu_check.py --device cpu --train-size 200 --max-batches 2 --methods dense vibnet
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

# fvcore compiles a loss with torch.jit.script on import, which torch 2.14 flags as deprecated.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

import torch  # noqa: E402

from benchmarks.config import Suite, SuiteError, expand_runs, load_suite  # noqa: E402
from benchmarks.data import DatasetError  # noqa: E402
from benchmarks.runner import RunOptions, SuiteRunner  # noqa: E402

logger = logging.getLogger("gpu_check")

SUITE = "paper-mnist"
MODEL = "lenet5"
MIB = 2**20


class UsageError(ValueError):
    """Bad command-line input; the message is shown as is."""


def resolve_device(value: str) -> torch.device:
    """Return the device for ``auto``, ``cpu`` or ``cuda``; raise ``UsageError`` for anything else or a missing GPU."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value not in ("cpu", "cuda"):
        raise UsageError(f"--device {value!r}: invalid value; use auto, cpu or cuda")
    if value == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--amp", action="store_true", help="train with bfloat16 autocast (CUDA only)")
    parser.add_argument("--train-size", type=int, default=10_000, help="random training images (default 10,000)")
    parser.add_argument("--val-size", type=int, default=500, help="random validation images (default 500)")
    parser.add_argument("--test-size", type=int, default=1_000, help="random test images (default 1,000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each phase (default 1)")
    parser.add_argument("--max-batches", type=int, help="stop each epoch after this many batches (default: none)")
    parser.add_argument("--methods", nargs="+", help="methods to run (default: every method of paper-mnist)")
    parser.add_argument("--all-sweep-values", action="store_true",
                        help="run every value of each method's sweep (default: the middle value only)")
    parser.add_argument("--targets", action="store_true", help="also prune to paper-mnist's compression targets")
    parser.add_argument("--results-dir", type=Path, help="where the records go (default: a temporary folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def check_suite(args: argparse.Namespace) -> Suite:
    """Return paper-mnist reduced to LeNet-5 on synthetic data with the shortened budget of ``args``.

    Raises:
        UsageError: for a method that paper-mnist does not run.
    """
    paper = load_suite(SUITE)
    entries = paper.methods
    if args.methods:
        unknown = sorted(set(args.methods) - {entry.name for entry in entries})
        if unknown:
            raise UsageError(f"--methods: {', '.join(unknown)} not in {SUITE}; choose from "
                             f"{', '.join(entry.name for entry in entries)}")
        entries = [entry for entry in entries if entry.name in args.methods]

    methods = []
    for entry in entries:
        data = entry.model_dump()
        if not args.all_sweep_values:
            # The middle value of each sweep becomes a plain parameter.
            data["params"] = {**data["params"], **{key: values[len(values) // 2] for key, values in data["sweep"].items()}}
            data["sweep"] = {}
        methods.append(data)

    budget = paper.budget.model_dump()
    budget.update(dense_epochs=args.epochs, sparsify_epochs=args.epochs, finetune_epochs=args.epochs,
                  max_batches_per_epoch=args.max_batches)
    fields = paper.model_dump()
    fields.update(
        name="gpu-check",
        description=f"the {MODEL} rows of {SUITE} on synthetic MNIST-shaped data",
        dataset="synthetic_mnist",
        dataset_options={"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size},
        models=[MODEL],
        seeds=[0],
        budget=budget,
        methods=methods,
        targets=fields["targets"] if args.targets else {"flops": [], "params": []},
    )
    return Suite(**fields)


def _steps_per_epoch(suite: Suite, train_size: int) -> int:
    """Return the training steps of one epoch of ``suite`` on ``train_size`` images."""
    steps = math.ceil(train_size / suite.budget.batch_size)
    limit = suite.budget.max_batches_per_epoch
    return min(steps, limit) if limit is not None else steps


def _row(record: dict[str, Any], steps_per_epoch: int, epochs: int) -> dict[str, Any]:
    """Return the printed values of one run record: milliseconds per step per phase, latency, memory, size."""
    config = record["config"]
    metrics = record["metrics"]
    target = config.get("target")
    point = f"{target['metric']}<={target['fraction']:g}" if target else "natural"
    steps = steps_per_epoch * epochs
    step_ms = {phase: 1e3 * seconds / steps for phase, seconds in record["seconds"].items()}
    latency = {str(t["batch_size"]): t["median_ms"] for t in metrics["latency"]}
    peak = metrics.get("peak_memory_bytes") or {}
    return {"method": config["method"], "point": point, "step_ms": step_ms, "latency_ms": latency,
            "peak_mib": {b: (v / MIB if v is not None else None) for b, v in peak.items()},
            "params": metrics["params"], "flops": metrics["flops_fvcore"]}


def _format_rows(rows: list[dict[str, Any]]) -> str:
    """Return the rows as a table with " | " between columns, one line per run."""
    batch_sizes = sorted({b for row in rows for b in row["latency_ms"]}, key=int)
    header = ["method", "point", "dense ms/step", "sparsify ms/step", "finetune ms/step"]
    header += [f"latency b={b} (median ms)" for b in batch_sizes]
    header += [f"peak b={b} (MiB)" for b in batch_sizes] + ["params", "FLOPs (fvcore)"]
    lines = [" | ".join(header)]
    for row in rows:
        peaks = [row["peak_mib"].get(b) for b in batch_sizes]
        cells = [row["method"], row["point"]]
        cells += [f"{row['step_ms'].get(phase, float('nan')):.2f}" for phase in ("dense", "sparsify", "finetune")]
        cells += [f"{row['latency_ms'][b]:.3f}" for b in batch_sizes]
        cells += ["-" if p is None else f"{p:.1f}" for p in peaks]
        cells += [f"{row['params']:,}", f"{row['flops']:,}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def full_suite_estimate(step_seconds: float) -> str:
    """Return the estimated training time of paper-mnist's LeNet-5 rows at ``step_seconds`` per step.

    The estimate counts the epochs each phase trains (one dense network per
    seed, one sparsity phase per method setting, one fine-tuning per run) on
    full MNIST's 55,000 training images. Validation, pruning and measurement
    come on top.
    """
    paper = load_suite(SUITE)
    runs = [run for run in expand_runs(paper) if run.model == MODEL]
    budget = paper.budget
    epochs = (len({r.dense_key() for r in runs}) * budget.dense_epochs
              + len({r.sparse_key() for r in runs}) * budget.sparsify_epochs
              + len(runs) * budget.finetune_epochs)
    steps = epochs * math.ceil((60_000 - paper.dataset_options.get("val_size", 5000)) / budget.batch_size)
    hours = steps * step_seconds / 3600
    return (f"estimate for {SUITE}, {MODEL} rows: {len(runs)} runs, {epochs:,} epochs, {steps:,} training steps; "
            f"at {step_seconds * 1e3:.2f} ms per step about {hours:.1f} h of training on this device "
            "(an estimate: validation, pruning and measurement come on top)")


def main(argv: list[str] | None = None) -> int:
    """Run the check and print its table; return the exit status (1 when a run failed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        device = resolve_device(args.device)
        if args.amp and device.type != "cuda":
            raise UsageError("--amp needs a CUDA device: bfloat16 autocast is only applied there")
        suite = check_suite(args)
    except UsageError as error:
        print(f"gpu_check: error: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        results_dir = args.results_dir or Path(scratch)
        logger.info("running %d runs of %s on %s", len(expand_runs(suite)), suite.description, device)
        try:
            outcome = SuiteRunner(suite, RunOptions(results_dir=results_dir, device=device, amp=args.amp)).run()
        except (SuiteError, DatasetError) as error:
            print(f"gpu_check: error: {error}", file=sys.stderr)
            return 2
        records = _read_records(results_dir)

    if not records:
        print("gpu_check: no run finished; see the errors above", file=sys.stderr)
        return 1
    environment = records[0]["environment"]
    print(f"device: {environment['device']} (gpu {environment.get('gpu')}, CUDA {environment.get('cuda')}, "
          f"cuDNN {environment.get('cudnn')}), torch {environment['torch']}, amp {'on' if args.amp else 'off'}")
    steps_per_epoch = _steps_per_epoch(suite, args.train_size)
    print(f"{steps_per_epoch} steps of batch {suite.budget.batch_size} per epoch, {args.epochs} epoch(s) per phase; "
          "ms/step includes one validation pass per epoch; peak memory is CUDA's max_memory_allocated of one "
          "forward pass minus the resident weights and input (- on the CPU)")
    order = [entry.name for entry in suite.methods]
    records.sort(key=lambda r: (order.index(r["config"]["method"]), r["config"].get("target") is not None,
                                repr(sorted(r["config"]["params"].items()))))
    rows = [_row(record, steps_per_epoch, args.epochs) for record in records]
    print(_format_rows(rows))

    step_ms = [row["step_ms"]["sparsify"] for row in rows if "sparsify" in row["step_ms"]]
    print(full_suite_estimate(statistics.median(step_ms) / 1e3))
    return 1 if outcome.failed else 0


def _read_records(results_dir: Path) -> list[dict[str, Any]]:
    """Return the successful run records under ``results_dir/runs``."""
    records = []
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("status") == "ok":
            records.append(record)
    return records


if __name__ == "__main__":
    sys.exit(main())
