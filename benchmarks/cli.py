"""The ``vibbench`` command line: run a suite, list components, write the report.

Bad input (an unknown name, a malformed suite file, a missing dataset) ends
with a one-line message on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from benchmarks.config import SuiteError, builtin_suites, load_suite
from benchmarks.data import DatasetError
from benchmarks.registry import DATASETS, METHODS, MODELS, UnknownNameError
from benchmarks.store import StoreError

logger = logging.getLogger("benchmarks")

EXIT_BAD_INPUT = 2
EXIT_RUNS_FAILED = 1


class UsageError(ValueError):
    """Bad input from the command line; the message is shown as is."""


def _device(value: str) -> torch.device:
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if value not in ("cpu", "cuda"):
        raise UsageError(f"--device {value!r}: invalid value; use auto, cpu or cuda")
    return torch.device(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibbench", description="Benchmark VIBNet and baseline pruning methods.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite (finished runs are skipped)")
    run.add_argument("suite", help=f"a suite file, or a built-in suite: {', '.join(builtin_suites())}")
    run.add_argument("--results-dir", type=Path, help="where records, tables and checkpoints go (default: results/SUITE)")
    run.add_argument("--data-dir", type=Path, help="root of torchvision's dataset files (full MNIST, CIFAR)")
    run.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    run.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    run.add_argument("--amp", action="store_true", help="train with CUDA mixed precision (bfloat16)")
    run.add_argument("--no-report", action="store_true", help="do not write the tables after the runs")

    listing = commands.add_parser("list", help="list models, datasets, methods and suites")
    listing.add_argument("what", nargs="?", choices=["models", "datasets", "methods", "suites"], help="one kind only")

    report = commands.add_parser("report", help="write tables from the records in RESULTS_DIR")
    report.add_argument("results_dir", type=Path, help="a results folder, such as results/quick")
    return parser


def _command_run(args: argparse.Namespace) -> int:
    from benchmarks.report import write_report
    from benchmarks.runner import RunOptions, run_suite

    suite = load_suite(args.suite)
    results_dir = args.results_dir or Path("results") / suite.name
    options = RunOptions(results_dir=results_dir, data_dir=args.data_dir, download=args.download,
                         device=_device(args.device), amp=args.amp)
    logger.info("suite %s: results in %s, device %s", suite.name, results_dir, options.device)
    outcome = run_suite(suite, options)

    if not args.no_report:
        table = write_report(results_dir)
        print(table)
    logger.info("%d runs finished, %d skipped (already recorded), %d unreachable targets, %d failed",
                outcome.finished, outcome.skipped, outcome.unreachable, len(outcome.failed))
    if outcome.failed:
        for line in outcome.failed:
            logger.error("failed: %s", line)
        return EXIT_RUNS_FAILED
    return 0


def _command_list(args: argparse.Namespace) -> int:
    import benchmarks.data  # noqa: F401  (registers datasets)
    import benchmarks.methods  # noqa: F401
    import benchmarks.models  # noqa: F401

    sections = {
        "models": [(n, MODELS.origin(n), (MODELS.get(n).__doc__ or "").strip().splitlines()[0]) for n in MODELS.names()],
        "datasets": [(n, DATASETS.origin(n), (DATASETS.get(n).__doc__ or "").strip().splitlines()[0]) for n in DATASETS.names()],
        "methods": [(n, METHODS.origin(n), f"prunes {METHODS.get(n).prunes}") for n in METHODS.names()],
        "suites": [(n, "built-in", "") for n in builtin_suites()],
    }
    for kind, rows in sections.items():
        if args.what and kind != args.what:
            continue
        print(f"{kind}:")
        for name, origin, summary in rows:
            print(f"  {name:<16} [{origin}] {summary}")
    return 0


def _command_report(args: argparse.Namespace) -> int:
    from benchmarks.report import write_report

    if not (args.results_dir / "runs").is_dir():
        raise UsageError(f"results_dir {str(args.results_dir)!r} has no runs/ folder; give a folder that `vibbench run` wrote")
    print(write_report(args.results_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # fvcore and torch-pruning log at INFO and WARNING about operators they skip;
    # the record keeps fvcore's list of skipped operators instead.
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    handlers = {"run": _command_run, "list": _command_list, "report": _command_report}
    try:
        return handlers[args.command](args)
    except (SuiteError, UnknownNameError, DatasetError, StoreError, UsageError) as error:
        print(f"vibbench: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("vibbench: interrupted; finished runs are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
