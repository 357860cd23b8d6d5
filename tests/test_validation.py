"""Suite validation before any training: the schema, every problem at once, and ``--dry-run``.

Each bad suite must end ``vibbench run`` (and ``vibbench run --dry-run``)
with exit status 2 and one line on stderr that names the field, without a
traceback and without creating the results folder.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.config import Suite, expand_runs
from benchmarks.store import ResultsStore

# mnist5k's 5,000 digits: 1,000 test, 500 validation, 3,500 training.
MNIST5K_TRAIN = 3500

VALID_SUITE = {
    "name": "valid",
    "dataset": "mnist5k",
    "models": ["lenet300100"],
    "methods": [{"name": "dense"}, {"name": "vibnet", "params": {"gamma": 1.0e-4}}],
    "seeds": [0],
    "targets": {"flops": [0.5]},
    "budget": {"dense_epochs": 1, "sparsify_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 2},
    "measure": {"min_run_time_s": 0.01, "latency_batch_sizes": [1], "threads": 1},
}
# The runs: dense at its natural point, and VIBNet at its natural point and at 50 % of the dense FLOPs.
VALID_RUNS = 3


def changed(path: str, value) -> dict:
    """Return a copy of the valid suite with the dotted ``path`` set to ``value`` (or removed for ``...``)."""
    suite = copy.deepcopy(VALID_SUITE)
    *parents, last = path.split(".")
    node = suite
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return suite


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


# One bad field per case: the suite, and the text (with its location) that the error line must contain.
BAD_SUITES = {
    "epochs_type": (changed("budget.dense_epochs", "three"), "budget.dense_epochs: Input should be a valid integer"),
    "epochs_negative": (
        changed("budget.finetune_epochs", -1),
        "budget.finetune_epochs: Input should be greater than or equal to 0 (got -1)",
    ),
    "epochs_missing": (changed("budget.sparsify_epochs", ...), "budget.sparsify_epochs: required field is missing"),
    "lr_zero": (changed("budget.optimizer", {"lr": 0}), "budget.optimizer.lr: Input should be greater than 0 (got 0)"),
    "momentum_one": (
        changed("budget.optimizer", {"name": "sgd", "momentum": 1.0}),
        "budget.optimizer.momentum: Input should be less than 1 (got 1.0)",
    ),
    "optimizer_name": (changed("budget.optimizer", {"name": "adamw"}), "budget.optimizer.name: Input should be"),
    "batch_zero": (changed("budget.batch_size", 0), "budget.batch_size: Input should be greater than or equal to 1"),
    "max_batches_zero": (
        changed("budget.max_batches_per_epoch", 0),
        "budget.max_batches_per_epoch: Input should be greater than or equal to 1",
    ),
    "seeds_type": (changed("seeds", "zero"), "seeds: Input should be a valid list"),
    "ranking": (changed("ranking", "globl"), "ranking: Input should be 'global', 'layer_normalized' or 'uniform'"),
    "min_run_time": (changed("measure.min_run_time_s", 0), "measure.min_run_time_s: Input should be greater than 0"),
    "unknown_model": (changed("models", ["lenet301"]), "models[0]: unknown model 'lenet301' (did you mean 'lenet300100'?)"),
    "unknown_dataset": (changed("dataset", "mnist6k"), "dataset: unknown dataset 'mnist6k' (did you mean 'mnist5k'?)"),
    "unknown_method": (
        changed("methods", [{"name": "group_laso"}]),
        "methods[0].name: unknown method 'group_laso' (did you mean 'group_lasso'?)",
    ),
    "unknown_param": (
        changed("methods.1.params", {"gama": 1.0e-4}),
        "methods[1].params.gama: unknown vibnet parameter 'gama' (did you mean 'gamma'?)",
    ),
    "param_range": (
        changed("methods.1.params", {"gamma": -1.0}),
        "methods[1].params: vibnet parameter gamma: Input should be greater than 0 (got -1.0)",
    ),
    "sweep_empty": (changed("methods.1.sweep", {"gamma": []}), "methods[1].sweep.gamma: empty list"),
    "override_model": (
        changed("methods.1.overrides", {"lenet5": {"gamma": 1.0e-3}}),
        "methods[1].overrides.lenet5: model 'lenet5' is not in this suite's models",
    ),
    "target_above": (changed("targets.flops", [1.5]), "targets.flops: target 1.5 is outside (0, 1]"),
    "target_zero": (changed("targets.params", [0.0]), "targets.params: target 0.0 is outside (0, 1]"),
    "latency_batch_zero": (changed("measure.latency_batch_sizes", [0]), "measure.latency_batch_sizes"),
    "methods_empty": (changed("methods", []), "methods: List should have at least 1 item"),
    "models_empty": (changed("models", []), "models: List should have at least 1 item"),
    "unknown_field": (
        {**VALID_SUITE, "seed": [0]},
        "seed: unknown field",
    ),
    "unknown_field_hint": ({**VALID_SUITE, "seed": [0]}, "did you mean 'seeds'?"),
    "unknown_budget_field_hint": (changed("budget.finetune_epoch", 1), "did you mean 'finetune_epochs'?"),
    "unknown_dataset_option_hint": (changed("dataset_options", {"val_sise": 100}), "did you mean 'val_size'?"),
    "batch_above_train": (
        changed("budget.batch_size", MNIST5K_TRAIN + 1),
        f"budget.batch_size: {MNIST5K_TRAIN + 1} is larger than the {MNIST5K_TRAIN} training images of dataset 'mnist5k'",
    ),
}


@pytest.mark.parametrize("mode", ["run", "dry_run"])
@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_bad_suite(cli, tmp_path, case, mode):
    suite, expected = BAD_SUITES[case]
    path = write_suite(tmp_path, suite)
    results = tmp_path / "results"
    flags = ["--dry-run"] if mode == "dry_run" else ["--no-report"]

    status, stdout, stderr = cli("run", str(path), "--results-dir", str(results), "--device", "cpu", *flags)

    lines = stderr.splitlines()
    assert status == 2
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vibbench: error: ")
    assert expected in lines[0]
    assert stdout == ""
    assert not results.exists()


def test_batch_at_train_size(cli, tmp_path):
    """A batch of the whole training set is the largest valid one."""
    path = write_suite(tmp_path, changed("budget.batch_size", MNIST5K_TRAIN))

    status, _, stderr = cli("run", str(path), "--dry-run", "--results-dir", str(tmp_path / "results"), "--device", "cpu")

    assert status == 0, stderr


# Every problem at once ---------------------------------------------------

# Four independent problems in different parts of the file.
MANY_PROBLEMS = {
    **VALID_SUITE,
    "models": ["lenet301"],
    "methods": [{"name": "vibnet", "params": {"gama": 1.0e-4}}],
    "targets": {"flops": [1.5]},
    "budget": {**VALID_SUITE["budget"], "finetune_epochs": -1},
}
MANY_EXPECTED = [
    "models[0]: unknown model 'lenet301'",
    "methods[0].params.gama: unknown vibnet parameter 'gama'",
    "targets.flops: target 1.5 is outside (0, 1]",
    "budget.finetune_epochs: Input should be greater than or equal to 0",
]


@pytest.fixture
def many_problems(cli, tmp_path) -> tuple[int, str]:
    path = write_suite(tmp_path, MANY_PROBLEMS)
    status, _, stderr = cli("run", str(path), "--dry-run", "--results-dir", str(tmp_path / "results"), "--device", "cpu")
    return status, stderr


def test_many_problems_status(many_problems):
    status, stderr = many_problems

    assert status == 2
    assert len(stderr.splitlines()) == 1, stderr


@pytest.mark.parametrize("expected", MANY_EXPECTED)
def test_many_problems_listed(many_problems, expected):
    _, stderr = many_problems

    assert expected in stderr


def test_two_field_problems_listed(cli, tmp_path):
    suite = changed("budget.dense_epochs", "three")
    suite["measure"]["min_run_time_s"] = 0
    path = write_suite(tmp_path, suite)

    status, _, stderr = cli("run", str(path), "--dry-run", "--results-dir", str(tmp_path / "results"), "--device", "cpu")

    assert status == 2
    assert "budget.dense_epochs: Input should be a valid integer" in stderr
    assert "measure.min_run_time_s: Input should be greater than 0" in stderr


# Dry run -----------------------------------------------------------------


@pytest.fixture
def dry_run(cli, tmp_path) -> tuple[int, list[str], str, Path]:
    """Run ``--dry-run`` on the valid suite and return status, stdout lines, stderr and the results folder."""
    path = write_suite(tmp_path, VALID_SUITE)
    results = tmp_path / "results"
    status, stdout, stderr = cli("run", str(path), "--dry-run", "--results-dir", str(results), "--device", "cpu")
    return status, stdout.splitlines(), stderr, results


def test_dry_run_status(dry_run):
    status, _, stderr, _ = dry_run

    assert status == 0, stderr


def test_dry_run_writes_nothing(dry_run):
    _, _, _, results = dry_run

    assert not results.exists()


def test_dry_run_runs_line(dry_run):
    _, lines, _, _ = dry_run

    assert lines[0] == f"suite valid: {VALID_RUNS} runs, {VALID_RUNS} without a record"


def test_dry_run_budget_line(dry_run):
    _, lines, _, _ = dry_run

    assert lines[1] == "budget per run: 1 dense + 1 sparsity + 1 fine-tuning epochs of 2 steps, batch 100"


def test_dry_run_model_line(dry_run):
    """One dense network, two sparsity networks (dense and VIBNet) and three fine-tunings: six epochs."""
    _, lines, _, _ = dry_run

    assert lines[2].startswith(f"  lenet300100: {VALID_RUNS} runs, 6 epochs, ")


def test_dry_run_estimate_line(dry_run):
    _, lines, _, _ = dry_run

    assert lines[-1].startswith("estimated training time: ")


def test_dry_run_counts_records(cli, tmp_path):
    """Runs that already have a successful record are not planned again."""
    results = tmp_path / "results"
    store = ResultsStore(results)
    store.ensure()
    run = expand_runs(Suite(**VALID_SUITE))[0]
    store.write({"run_id": run.run_id, "config": run.model_dump(mode="json"), "status": "ok"})
    path = write_suite(tmp_path, VALID_SUITE)

    status, stdout, stderr = cli("run", str(path), "--dry-run", "--results-dir", str(results), "--device", "cpu")

    assert status == 0, stderr
    assert stdout.splitlines()[0] == f"suite valid: {VALID_RUNS} runs, {VALID_RUNS - 1} without a record"
    assert sorted(path.name for path in (results / "runs").iterdir()) == [f"{run.run_id}.json"]


# The real executable -----------------------------------------------------


def vibbench_command() -> list[str]:
    """Return the installed console script, or the module when the script is missing."""
    script = Path(sys.executable).parent / "vibbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "benchmarks.cli"]


def test_batch_above_train_stderr(tmp_path):
    """The size check needs the data, yet it still ends with one line and creates no results folder."""
    path = write_suite(tmp_path, changed("budget.batch_size", MNIST5K_TRAIN + 1))
    results = tmp_path / "results"

    completed = subprocess.run(
        [*vibbench_command(), "run", str(path), "--results-dir", str(results), "--device", "cpu", "--no-report"],
        capture_output=True, text=True, cwd=tmp_path,
    )

    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"vibbench: error: suite valid: budget.batch_size: {MNIST5K_TRAIN + 1} is larger than the {MNIST5K_TRAIN} training images "
        f"of dataset 'mnist5k'; use at most {MNIST5K_TRAIN}"
    ]
    assert not results.exists()
