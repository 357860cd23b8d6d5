"""The ``vibbench`` command line: a tiny suite end to end, reruns, listing and bad input."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import benchmarks

LENET300_PARAMS = 266_610
LENET300_FLOPS = 266_200
# Leaf outputs of LeNet-300-100 for one input, 4 bytes each: 784 + 2 * 300 + 2 * 100 + 10.
LENET300_ACTIVATION_BYTES = (784 + 600 + 200 + 10) * 4

TINY_SUITE = {
    "name": "tiny",
    "dataset": "mnist5k",
    "models": ["lenet300100"],
    "methods": [{"name": m} for m in ["dense", "vibnet", "group_lasso", "slimming", "magnitude"]],
    "seeds": [0],
    "budget": {"dense_epochs": 1, "sparsify_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 2},
    "targets": {"flops": [0.5]},
    "measure": {"min_run_time_s": 0.01},
}

# Every method has a natural run, and the pruning methods also have one at 50 % of dense FLOPs.
EXPECTED_RUNS = [("dense", None)] + [
    (method, target) for method in ["vibnet", "group_lasso", "slimming", "magnitude"] for target in [None, 0.5]
]


def vibbench_command() -> list[str]:
    """Return the installed console script, or the module when the script is missing."""
    script = Path(sys.executable).parent / "vibbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "benchmarks.cli"]


def run_vibbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*vibbench_command(), *args], capture_output=True, text=True, cwd=cwd)


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def expected_git_commit() -> str | None:
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(benchmarks.__file__).parent
        )
    except OSError:
        return None
    return output.stdout.strip() or None


def expected_cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run the tiny suite once through the console script and return its suite, results folder and process."""
    folder = tmp_path_factory.mktemp("cli")
    suite = write_suite(folder, TINY_SUITE)
    results = folder / "results"
    completed = run_vibbench("run", str(suite), "--device", "cpu", "--results-dir", str(results), cwd=folder)
    return suite, results, completed


@pytest.fixture(scope="module")
def records(suite_run) -> dict[tuple[str, float | None], dict]:
    """Return the records of the tiny suite keyed by (method, FLOPs target)."""
    _, results, _ = suite_run
    found = {}
    for path in sorted((results / "runs").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        record["_path"] = path
        target = record["config"]["target"]
        found[(record["config"]["method"], target["fraction"] if target else None)] = record
    return found


def test_run_exit_status(suite_run):
    _, _, completed = suite_run

    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr


def test_run_record_count(suite_run, records):
    _, results, _ = suite_run

    assert len(list((results / "runs").glob("*.json"))) == len(EXPECTED_RUNS)
    assert sorted(records, key=str) == sorted(EXPECTED_RUNS, key=str)


@pytest.mark.parametrize(("method", "target"), EXPECTED_RUNS)
def test_record_fields(records, method, target):
    record = records[(method, target)]
    metrics = record["metrics"]

    assert record["status"] == "ok"
    assert record["run_id"] == record["_path"].stem
    assert re.fullmatch(r"[0-9a-f]{16}", record["run_id"])
    assert record["config"]["model"] == "lenet300100"
    assert record["config"]["dataset"] == "mnist5k"
    assert record["config"]["budget"]["max_batches_per_epoch"] == 2
    assert record["config"]["target"] == (None if target is None else {"metric": "flops", "fraction": target})
    assert record["environment"]["torch"] == torch.__version__
    assert record["environment"]["git_commit"] == expected_git_commit()
    assert record["environment"]["device_type"] == "cpu"
    if expected_cpu_name() is not None:
        assert record["environment"]["device"] == expected_cpu_name()

    for key in ["params", "params_nonzero", "flops_fvcore", "flops_nonzero", "activation_bytes"]:
        assert isinstance(metrics[key], int), key
    assert metrics["params_nonzero"] <= metrics["params"]
    assert metrics["flops_nonzero"] <= metrics["flops_fvcore"]
    assert isinstance(metrics["fvcore_unsupported_ops"], dict)
    assert isinstance(metrics["widths"], dict)

    # 1,000 test digits: the error is a whole number of digits, in tenths of a percent.
    assert 0.0 <= metrics["test_error_pct"] <= 100.0
    assert metrics["test_error_pct"] * 10 == pytest.approx(round(metrics["test_error_pct"] * 10), abs=1e-9)

    assert [timing["batch_size"] for timing in metrics["latency"]] == [1, 64]
    for timing in metrics["latency"]:
        assert timing["median_ms"] > 0

    assert [curve["phase"] for curve in record["curves"]] == ["dense", "sparsify", "finetune"]
    assert sorted(record["seconds"]) == ["dense", "finetune", "sparsify"]


def test_dense_record_values(records):
    metrics = records[("dense", None)]["metrics"]

    assert metrics["params"] == LENET300_PARAMS
    assert metrics["params_nonzero"] == LENET300_PARAMS
    assert metrics["flops_fvcore"] == LENET300_FLOPS
    assert metrics["flops_nonzero"] == LENET300_FLOPS
    assert metrics["activation_bytes"] == LENET300_ACTIVATION_BYTES
    assert metrics["widths"] == {"input": 784, "fc1": 300, "fc2": 100}
    assert metrics["fvcore_unsupported_ops"] == {}


@pytest.mark.parametrize("method", ["vibnet", "group_lasso", "slimming", "magnitude"])
def test_target_record_fraction(records, method):
    metrics = records[(method, 0.5)]["metrics"]

    assert metrics["dense_flops_fvcore"] == LENET300_FLOPS
    assert metrics["flops_fraction"] <= 0.5


@pytest.mark.parametrize("method", ["vibnet", "group_lasso", "slimming"])
def test_structured_target_smaller(records, method):
    metrics = records[(method, 0.5)]["metrics"]

    assert metrics["flops_fvcore"] <= LENET300_FLOPS // 2
    assert metrics["params"] < LENET300_PARAMS


def test_magnitude_target_dense_shape(records):
    metrics = records[("magnitude", 0.5)]["metrics"]

    # Masks keep the dense tensors, so only the non-zero counts shrink.
    assert metrics["params"] == LENET300_PARAMS
    assert metrics["flops_fvcore"] == LENET300_FLOPS
    assert metrics["flops_nonzero"] <= LENET300_FLOPS // 2


def test_rerun_skips_all(suite_run, records):
    suite, results, _ = suite_run
    before = {path.name: path.read_bytes() for path in (results / "runs").glob("*.json")}

    completed = run_vibbench("run", str(suite), "--device", "cpu", "--results-dir", str(results), cwd=suite.parent)

    after = {path.name: path.read_bytes() for path in (results / "runs").glob("*.json")}
    assert completed.returncode == 0, completed.stderr
    assert f"0 runs finished, {len(EXPECTED_RUNS)} skipped" in completed.stderr
    assert after == before


def test_list_output(tmp_path):
    completed = run_vibbench("list", cwd=tmp_path)

    sections: dict[str, list[str]] = {}
    current = None
    for line in completed.stdout.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = line[:-1]
            sections[current] = []
        elif line.strip():
            sections[current].append(line.split()[0])

    assert completed.returncode == 0
    assert {"lenet300100", "lenet5"} <= set(sections["models"])
    assert {"mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(sections["datasets"])
    assert {"dense", "vibnet", "group_lasso", "slimming", "magnitude"} <= set(sections["methods"])


# Bad input --------------------------------------------------------------


def assert_one_line_error(status: int, stderr: str, expected: str) -> None:
    lines = stderr.splitlines()
    assert status == 2
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vibbench: error: ")
    assert expected in lines[0]


def changed_suite(**changes) -> dict:
    suite = copy.deepcopy(TINY_SUITE)
    suite.update(changes)
    return suite


BAD_SUITES = {
    "model": (changed_suite(models=["lenet301"]), "unknown model 'lenet301'"),
    "dataset": (changed_suite(dataset="mnist6k"), "unknown dataset 'mnist6k'"),
    "method": (changed_suite(methods=[{"name": "slimmer"}]), "unknown method 'slimmer'"),
    "method_param": (
        changed_suite(methods=[{"name": "vibnet", "params": {"gama": 0.1}}]),
        "unknown vibnet parameter 'gama'",
    ),
    "target_above": (changed_suite(targets={"flops": [1.5]}), "target 1.5 is outside (0, 1]"),
    "target_zero": (changed_suite(targets={"params": [0.0]}), "target 0.0 is outside (0, 1]"),
    "target_negative": (changed_suite(targets={"flops": [-0.25]}), "target -0.25 is outside (0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_bad_suite(case, cli, tmp_path):
    suite, expected = BAD_SUITES[case]
    path = write_suite(tmp_path, suite)

    status, _, stderr = cli("run", str(path), "--results-dir", str(tmp_path / "results"))

    assert_one_line_error(status, stderr, expected)
    assert not (tmp_path / "results").exists()


def test_malformed_yaml(cli, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nmodels: [lenet300100\nmethods: []\n", encoding="utf-8")

    status, _, stderr = cli("run", str(path), "--results-dir", str(tmp_path / "results"))

    assert_one_line_error(status, stderr, "malformed YAML")


def test_missing_suite(cli, tmp_path):
    path = tmp_path / "absent.yaml"

    status, _, stderr = cli("run", str(path), "--results-dir", str(tmp_path / "results"))

    assert_one_line_error(status, stderr, f"suite '{path}' not found")


def test_cuda_unavailable(cli, tmp_path, monkeypatch):
    # Pretend CUDA is missing, so the check holds on GPU machines too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_suite(tmp_path, TINY_SUITE)

    status, _, stderr = cli("run", str(path), "--device", "cuda", "--results-dir", str(tmp_path / "results"))

    assert_one_line_error(status, stderr, "--device cuda: no CUDA device is available")


def test_mnist_missing_files(cli, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = write_suite(tmp_path, changed_suite(dataset="mnist", methods=[{"name": "dense"}]))

    status, _, stderr = cli(
        "run", str(path), "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"), "--no-report"
    )

    assert_one_line_error(status, stderr, "dataset 'mnist'")
    assert str(data_dir / "MNIST" / "raw") in stderr
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        assert name in stderr


@pytest.fixture(scope="module")
def bad_model_process(tmp_path_factory) -> subprocess.CompletedProcess:
    """Run the console script once on a suite that names an unknown model."""
    folder = tmp_path_factory.mktemp("bad_model")
    path = write_suite(folder, changed_suite(models=["lenet301"]))
    return run_vibbench("run", str(path), "--results-dir", str(folder / "results"), cwd=folder)


def test_bad_input_console_script(bad_model_process):
    lines = bad_model_process.stderr.splitlines()

    assert bad_model_process.returncode == 2
    assert "Traceback" not in bad_model_process.stderr
    assert lines[-1].startswith("vibbench: error: ")
    assert "unknown model 'lenet301'" in lines[-1]


def test_bad_input_stderr_one_line(bad_model_process):
    # Import-time warnings of torch and fvcore must not reach stderr ahead of the message.
    stderr = bad_model_process.stderr

    assert stderr.splitlines() == [stderr.strip()]
