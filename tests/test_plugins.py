"""Plug-ins: an installed package's entry points, suite plug-ins, broken plug-ins, the docs' examples,
and the check that stops a model the structural surgery cannot prune before any training."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from benchmarks import plugins
from benchmarks.models import lenet_5, lenet_300_100
from benchmarks.registry import METHODS, MODELS
from benchmarks.structure import UnsupportedModelError, check_prunable

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "plugin_fixture"
EXTENDING = ROOT / "docs" / "extending.md"
FIXTURE_DIST = "vibbench-toy-plugin"
# One epoch per phase of two batches: enough to exercise every phase, fast on two cores.
TINY = {
    "seeds": [0],
    "budget": {"dense_epochs": 1, "sparsify_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 2},
    "measure": {"min_run_time_s": 0.01, "latency_batch_sizes": [1]},
}

RESHAPING_PLUGIN = '''
"""A model whose custom module flattens with x.view, which the structural surgery cannot follow."""
from collections import OrderedDict

from torch import nn

from benchmarks.registry import MODELS


class Reshape(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


@MODELS.register("reshaping_net")
def reshaping_net(input_shape=(1, 28, 28), num_classes=10):
    """A convolution, a custom reshape and two Linear layers."""
    channels, height, width = input_shape
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(channels, 4, 3), relu=nn.ReLU(), body=Reshape(),
        fc1=nn.Linear(4 * (height - 2) * (width - 2), 16), relu1=nn.ReLU(), fc2=nn.Linear(16, num_classes),
    ))
'''


def vibbench_command() -> list[str]:
    """Return the installed console script, or the module when the script is missing."""
    script = Path(sys.executable).parent / "vibbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "benchmarks.cli"]


def run_vibbench(*args: str, cwd: Path, pythonpath: list[Path] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([*vibbench_command(), *args], capture_output=True, text=True, cwd=cwd, env=env)


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def read_records(results_dir: Path) -> list[dict]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted((results_dir / "runs").glob("*.json"))]


def listed(output: str, name: str) -> str:
    """Return the `vibbench list` line of ``name``, or an empty string."""
    match = re.search(rf"^  {re.escape(name)}\s+\[.*$", output, flags=re.MULTILINE)
    return match.group(0) if match else ""


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """Install the fixture package with pip into a folder of its own; return that folder for PYTHONPATH."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    return target


def test_list_shows_origins_and_failures(installed_plugin, tmp_path):
    done = run_vibbench("list", cwd=tmp_path, pythonpath=[installed_plugin])

    assert done.returncode == 0, done.stderr
    assert f'[entry point "{FIXTURE_DIST}"]' in listed(done.stdout, "toy_mlp")
    assert f'[entry point "{FIXTURE_DIST}"]' in listed(done.stdout, "toy_norm")
    assert '[entry point "vibbench"]' in listed(done.stdout, "random")
    assert "[built-in]" in listed(done.stdout, "lenet300100")
    assert "[built-in]" in listed(done.stdout, "vibnet")
    failures = done.stdout.split("plug-ins that failed to load")[1]
    assert "vibbench.models:broken" in failures
    assert "fails on purpose" in failures
    # What the broken module registered before failing is removed again.
    assert listed(done.stdout, "half_registered") == ""
    assert "vibbench.models:broken" in done.stderr


def test_suite_runs_installed_plugin(installed_plugin, tmp_path):
    suite = {"name": "toy", "dataset": "mnist5k", "models": ["toy_mlp"], "targets": {"flops": [0.5]},
             "methods": [{"name": "dense"}, {"name": "toy_norm"}], **TINY}
    path = write_suite(tmp_path, suite)

    done = run_vibbench("run", str(path), "--results-dir", "results", "--device", "cpu", cwd=tmp_path,
                        pythonpath=[installed_plugin])

    assert done.returncode == 0, done.stderr
    records = read_records(tmp_path / "results")
    points = sorted((r["config"]["method"], r["config"]["target"] is not None) for r in records)
    assert points == [("dense", False), ("toy_norm", False), ("toy_norm", True)]
    assert all(r["status"] == "ok" and r["config"]["model"] == "toy_mlp" for r in records)
    natural = next(r for r in records if r["config"]["method"] == "toy_norm" and r["config"]["target"] is None)
    assert natural["metrics"]["widths"]["fc1"] == 16
    table = (tmp_path / "results" / "table.md").read_text(encoding="utf-8")
    assert re.search(r"^\| toy_mlp\s+\| toy_norm ", table, flags=re.MULTILINE)
    # The broken entry point is reported, and the suite runs all the same.
    assert "vibbench.models:broken" in done.stderr


def test_list_shows_suite_plugin_origin(tmp_path):
    (tmp_path / "suite_models.py").write_text(RESHAPING_PLUGIN, encoding="utf-8")
    suite = {"name": "own", "plugins": ["suite_models"], "models": ["reshaping_net"],
             "methods": [{"name": "dense"}], **TINY}
    path = write_suite(tmp_path, suite)

    done = run_vibbench("list", "models", "--suite", str(path), cwd=tmp_path, pythonpath=[tmp_path])

    assert done.returncode == 0, done.stderr
    assert '[suite plugin "suite_models"]' in listed(done.stdout, "reshaping_net")
    assert "[built-in]" in listed(done.stdout, "lenet5")


@pytest.mark.parametrize(
    ("source", "expected"),
    [(None, "ModuleNotFoundError"), ("raise ImportError('needs a missing library')", "needs a missing library")],
    ids=["missing", "raises"],
)
def test_broken_suite_plugin_stops_suite(tmp_path, source, expected):
    if source is not None:
        (tmp_path / "bad_plugin.py").write_text(source + "\n", encoding="utf-8")
    suite = {"name": "bad", "plugins": ["bad_plugin"], "models": ["lenet300100"], "methods": [{"name": "dense"}], **TINY}
    path = write_suite(tmp_path, suite)

    done = run_vibbench("run", str(path), "--results-dir", "results", cwd=tmp_path, pythonpath=[tmp_path])

    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("vibbench: error:")
    assert "plugins[0]" in message
    assert "'bad_plugin'" in message
    assert expected in message
    assert not (tmp_path / "results" / "runs").exists()


def test_unprunable_model_stops_before_training(tmp_path):
    (tmp_path / "suite_models.py").write_text(RESHAPING_PLUGIN, encoding="utf-8")
    suite = {"name": "own", "plugins": ["suite_models"], "models": ["reshaping_net"],
             "methods": [{"name": "dense"}, {"name": "group_lasso"}], **TINY}
    path = write_suite(tmp_path, suite)

    done = run_vibbench("run", str(path), "--results-dir", "results", "--device", "cpu", cwd=tmp_path,
                        pythonpath=[tmp_path])

    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert "model 'reshaping_net'" in message
    assert "group_lasso" in message
    assert "layer 'body' (Reshape)" in message
    assert "calls view" in message
    checkpoints = tmp_path / "results" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_docs_examples_run_as_written(tmp_path):
    text = EXTENDING.read_text(encoding="utf-8")
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL)
    files = {}
    for language, code in blocks:
        first = code.splitlines()[0]
        if language == "python" and first.startswith("# my_plugin/"):
            files[first[2:].strip()] = code
    for relative, code in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(code, encoding="utf-8")
    suite = yaml.safe_load(next(code for language, code in blocks if language == "yaml"))
    entry_points = tomllib.loads(next(code for language, code in blocks if language == "toml"))
    # The docs' suite as written, with the tiny budget of these tests.
    path = write_suite(tmp_path, {**suite, **TINY})

    done = run_vibbench("run", str(path), "--results-dir", "results", "--device", "cpu", "--no-report",
                        cwd=tmp_path, pythonpath=[tmp_path])

    assert sorted(files) == ["my_plugin/datasets.py", "my_plugin/methods.py", "my_plugin/models.py"]
    assert set(entry_points["project"]["entry-points"]) == set(plugins.ENTRY_POINT_GROUPS)
    assert done.returncode == 0, done.stderr
    records = read_records(tmp_path / "results")
    assert {r["config"]["method"] for r in records} == {"dense", "l1_norm", "random"}
    assert all(r["status"] == "ok" for r in records)
    assert all(r["config"]["dataset"] == "digits8x8" and r["config"]["model"] == "tiny_mlp" for r in records)
    assert sum(r["config"]["method"] == "l1_norm" for r in records) == 1 + len(suite["targets"]["flops"])


def test_entry_point_object_registers_by_name():
    plugins.load_plugins()
    failures_before = plugins.plugin_failures()
    good = importlib.metadata.EntryPoint("toy_lenet", "benchmarks.models:lenet_300_100", "vibbench.models")
    clash = importlib.metadata.EntryPoint("lenet5", "benchmarks.models:lenet_300_100", "vibbench.models")
    try:
        plugins._load_entry_point("vibbench.models", MODELS, good)
        plugins._load_entry_point("vibbench.models", MODELS, clash)

        assert MODELS.get("toy_lenet") is lenet_300_100
        assert MODELS.origin("toy_lenet") == 'entry point "unknown distribution"'
        assert MODELS.get("lenet5") is lenet_5
        assert MODELS.origin("lenet5") == "built-in"
        failure = plugins.plugin_failures()[-1]
        assert failure.name == "vibbench.models:lenet5"
        assert "already registered (from built-in)" in failure.error
    finally:
        MODELS.unregister("toy_lenet")
        plugins._STATE.failures[:] = failures_before


def test_entry_point_non_method_rejected():
    plugins.load_plugins()
    failures_before = plugins.plugin_failures()
    entry_point = importlib.metadata.EntryPoint("not_a_method", "benchmarks.models:lenet_5", "vibbench.methods")
    try:
        plugins._load_entry_point("vibbench.methods", METHODS, entry_point)

        assert "not_a_method" not in METHODS
        assert "not a subclass of PruningMethod" in plugins.plugin_failures()[-1].error
    finally:
        plugins._STATE.failures[:] = failures_before


class _Reshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class _DoubledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (OrderedDict(conv=nn.Conv2d(1, 4, 3), body=_Reshape(), fc1=nn.Linear(144, 8), fc2=nn.Linear(8, 2)),
         r"layer 'body' \(_Reshape\): custom module _Reshape calls view"),
        (OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(64, 8), block=_Block(), fc2=nn.Linear(8, 2)),
         r"layer 'block' \(_Block\): custom module _Block holds weighted layers \(fc\)"),
        (OrderedDict(flatten=nn.Flatten(), fc1=_DoubledLinear(64, 8), fc2=nn.Linear(8, 2)),
         r"layer 'fc1' \(_DoubledLinear\): a subclass of Linear with its own forward"),
        (OrderedDict(flatten=nn.Flatten(), inner=nn.Sequential(nn.Linear(64, 8)), fc2=nn.Linear(8, 2)),
         r"layer 'inner' \(Sequential\): a nested container"),
        (OrderedDict(conv1=nn.Conv2d(1, 4, 3), conv2=nn.Conv2d(4, 4, 3, groups=4), flatten=nn.Flatten(),
                     fc=nn.Linear(64, 2)),
         r"layer 'conv2' \(Conv2d\): a grouped convolution \(groups=4\)"),
        (OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(64, 2)), r"at least two weighted layers"),
    ],
    ids=["view", "nested-layers", "subclass", "container", "grouped", "one-layer"],
)
def test_check_prunable_names_layer_and_reason(layers, expected):
    with pytest.raises(UnsupportedModelError, match=expected):
        check_prunable(nn.Sequential(layers), torch.zeros(1, 1, 8, 8))


def test_check_prunable_rejects_custom_network():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    with pytest.raises(UnsupportedModelError, match=r"the model \(Net\): the structural surgery needs a flat"):
        check_prunable(Net(), torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("build", [lenet_300_100, lenet_5], ids=["lenet300", "lenet5"])
def test_check_prunable_accepts_reference_networks(build):
    check_prunable(build(), torch.zeros(1, 1, 28, 28))
