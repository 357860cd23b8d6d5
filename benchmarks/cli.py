"""The ``vibbench`` command line: run a suite, list components, write the report.

Bad input (an unknown name, a malformed suite file, a missing dataset) ends
with a one-line message on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from pathlib import Path

# torch logs "No CUDA runtime is found" on import on machines without CUDA;
# the device in use is logged and recorded instead.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
# fvcore compiles a loss with torch.jit.script on import, which torch 2.14 flags as deprecated.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)

import torch  # noqa: E402

from benchmarks.config import SuiteError, builtin_suites, load_suite  # noqa: E402
from benchmarks.data import DatasetError  # noqa: E402
from benchmarks.export import ExportError  # noqa: E402
from benchmarks.registry import DATASETS, METHODS, MODELS, UnknownNameError  # noqa: E402
from benchmarks.store import StoreError  # noqa: E402

logger = logging.getLogger("benchmarks")

EXIT_BAD_INPUT = 2
EXIT_RUNS_FAILED = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it unwinds like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


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
    run.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto, the GPU where CUDA is available, else the CPU)")
    run.add_argument("--amp", action="store_true", help="train with CUDA mixed precision (bfloat16)")
    run.add_argument("--loader-workers", type=int, default=0,
                     help="DataLoader worker processes for training batches (default 0: gather in the main process)")
    run.add_argument("--no-report", action="store_true", help="do not write the tables after the runs")
    run.add_argument("--dry-run", action="store_true", help="validate the suite, print the plan and an estimated time, and exit")
    run.add_argument("--executor", default="local", choices=["local", "ray", "slurm"],
                     help="where runs execute: local processes, a Ray cluster, or Slurm through submitit")
    run.add_argument("--workers", type=int, default=1, help="parallel local worker processes (default 1: in this process)")
    run.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local Ray instance)")
    run.add_argument("--slurm-partition", help="Slurm partition (default: the suite's resources.slurm_partition)")
    run.add_argument("--slurm-time", type=int, help="Slurm time limit per run in minutes (default: the suite's)")
    run.add_argument("--slurm-gpus", type=int, help="GPUs per Slurm task (default: the suite's resources.gpus_per_run)")
    run.add_argument("--slurm-array-parallelism", type=int, default=16, help="Slurm array jobs running at once")
    run.add_argument("--slurm-folder", type=Path, help="submitit's log folder (default: RESULTS_DIR/slurm)")
    run.add_argument("--slurm-local", action="store_true", help=argparse.SUPPRESS)

    listing = commands.add_parser("list", help="list models, datasets, methods and suites")
    listing.add_argument("what", nargs="?", choices=["models", "datasets", "methods", "suites"], help="one kind only")
    listing.add_argument("--suite", help="also load the plug-ins that this suite file lists")

    export = commands.add_parser("export", help="write the compact network of a finished run, with a JSON of its metrics")
    export.add_argument("run_id", help="the run's id (its record's file name in RESULTS_DIR/runs), or a unique prefix")
    export.add_argument("--results-dir", type=Path, required=True, help="the results folder the run was written to")
    export.add_argument("--format", default="state_dict", choices=["state_dict", "torchscript", "onnx"],
                        help="state_dict (benchmarks.load_compact reads it), torchscript or onnx (default: state_dict)")
    export.add_argument("--output", type=Path, required=True, help="the file to write; OUTPUT.json gets the summary")

    report = commands.add_parser("report", help="write tables from the records in RESULTS_DIR")
    report.add_argument("results_dir", type=Path, help="a results folder, such as results/quick")
    return parser


def _command_run(args: argparse.Namespace) -> int:
    from benchmarks.report import write_report
    from benchmarks.runner import RunOptions, SuiteRunner

    suite = load_suite(args.suite)
    results_dir = args.results_dir or Path("results") / suite.name
    device = _device(args.device)
    if args.amp and device.type != "cuda":
        raise UsageError(f"--amp: mixed precision needs a CUDA device, but the device is {device.type}; "
                         "drop --amp or use --device cuda")
    if args.loader_workers < 0:
        raise UsageError(f"--loader-workers {args.loader_workers}: invalid value; give 0 or more")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: invalid value; give 1 or more")
    if args.workers > 1 and args.executor != "local":
        raise UsageError(f"--workers {args.workers} applies to --executor local only; "
                         f"--executor {args.executor} schedules runs itself, so drop --workers")
    options = RunOptions(results_dir=results_dir, data_dir=args.data_dir, download=args.download,
                         device=device, amp=args.amp, loader_workers=args.loader_workers)
    runner = SuiteRunner(suite, options)
    if args.dry_run:
        print(runner.plan())
        return 0
    runner.check_data()  # bad data or batch size: one error line, before any log line or folder
    logger.info("suite %s: results in %s, device %s, executor %s", suite.name, results_dir, options.device, args.executor)
    if args.executor == "local" and args.workers <= 1:
        outcome = runner.run()
    else:
        outcome = _run_distributed(args, suite, options, runner)

    if not args.no_report:
        table = write_report(results_dir)
        print(table)
    logger.info("%d runs finished, %d skipped (already recorded), %d unreachable targets, %d failed, "
                "%d held by another process", outcome.finished, outcome.skipped, outcome.unreachable,
                len(outcome.failed), len(outcome.busy))
    if outcome.failed:
        for line in outcome.failed:
            logger.error("failed: %s", line)
        return EXIT_RUNS_FAILED
    return 0


def _run_distributed(args: argparse.Namespace, suite, options, runner):
    """Run the suite's missing runs through an executor and return a SuiteOutcome."""
    from benchmarks import executors
    from benchmarks.runner import SuiteOutcome

    runner.check_data()
    runs = executors.pending_runs(suite, runner.store)
    runner.check_models(runs)
    runner.store.ensure()
    total = len(executors.expand_runs(suite))
    workers = args.workers if args.executor == "local" else 1
    spec = executors.WorkerSpec(
        suite=suite.model_dump(mode="json"), results_dir=str(options.results_dir),
        data_dir=str(options.data_dir) if options.data_dir else None, download=options.download,
        device=options.device.type, amp=options.amp, executor=args.executor,
        threads=max(1, torch.get_num_threads() // workers),
    )
    try:
        if args.executor == "local":
            outcomes = executors.run_local(spec, runs, args.workers)
        elif args.executor == "ray":
            outcomes = executors.run_ray(spec, runs, args.ray_address, suite.resources.cpus_per_run,
                                         suite.resources.gpus_per_run)
        else:
            slurm = executors.SlurmOptions(
                folder=str(args.slurm_folder or options.results_dir / "slurm"),
                partition=args.slurm_partition or suite.resources.slurm_partition,
                time_minutes=args.slurm_time or suite.resources.slurm_time_minutes,
                gpus_per_task=args.slurm_gpus if args.slurm_gpus is not None else int(suite.resources.gpus_per_run),
                cpus_per_task=int(suite.resources.cpus_per_run),
                array_parallelism=args.slurm_array_parallelism, local=args.slurm_local,
            )
            outcomes = executors.run_slurm(spec, runs, slurm)
    except executors.ExecutorUnavailable as error:
        raise UsageError(str(error)) from error

    counts, failed = executors.summarize(outcomes)
    return SuiteOutcome(
        finished=counts.get("ok", 0), skipped=total - len(runs) + counts.get("skipped", 0), failed=failed,
        unreachable=counts.get("unreachable", 0),
        busy=[o["label"] for o in outcomes if o["status"] == "busy"],
    )


def _first_line(entry: object) -> str:
    lines = (entry.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def _command_list(args: argparse.Namespace) -> int:
    from benchmarks.plugins import load_plugins, plugin_failures

    load_plugins()
    if args.suite:
        load_suite(args.suite)  # imports the suite's plug-ins, so their origins show
    sections = {
        "models": [(n, MODELS.origin(n), _first_line(MODELS.get(n))) for n in MODELS.names()],
        "datasets": [(n, DATASETS.origin(n), _first_line(DATASETS.get(n))) for n in DATASETS.names()],
        "methods": [(n, METHODS.origin(n), f"prunes {METHODS.get(n).prunes}") for n in METHODS.names()],
        "suites": [(n, "built-in", _suite_description(n)) for n in builtin_suites()],
    }
    for kind, rows in sections.items():
        if args.what and kind != args.what:
            continue
        print(f"{kind}:")
        for name, origin, summary in rows:
            print(f"  {name:<16} [{origin}] {summary}")
    failures = plugin_failures()
    if failures:
        print("plug-ins that failed to load (their entries are missing above):")
        for failure in failures:
            print(f"  {failure}")
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from benchmarks.export import export_run

    # The ONNX exporter's graph passes log every step at INFO.
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    summary = export_run(args.results_dir, args.run_id, args.format, args.output)
    print(f"wrote {args.output} and {summary}")
    return 0


def _suite_description(name: str) -> str:
    try:
        return load_suite(name).description
    except SuiteError as error:
        return f"(invalid: {error})"


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

    # SIGTERM unwinds like Ctrl-C, so temporary files are removed and the message below is shown.
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    handlers = {"run": _command_run, "list": _command_list, "report": _command_report, "export": _command_export}
    try:
        return handlers[args.command](args)
    except (SuiteError, UnknownNameError, DatasetError, StoreError, UsageError, ExportError) as error:
        print(f"vibbench: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interruption:
        print("vibbench: interrupted; finished runs are recorded, rerun the same command to resume", file=sys.stderr)
        # The shell's convention: 128 + the signal number.
        return 128 + (signal.SIGTERM if isinstance(interruption, Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
