"""The compact network of a run: saved by the runner, rebuilt in a new process, exported, and its file size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from benchmarks.config import load_suite
from benchmarks.export import (
    ExportError,
    build_from_specs,
    export_run,
    layer_specs,
    load_compact,
    sparse_state_dict_bytes,
    state_dict_bytes,
)
from benchmarks.runner import RunOptions, SuiteRunner
from benchmarks.store import ResultsStore
from benchmarks.structure import FeatureSelect

STRUCTURED = ["vibnet", "group_lasso", "slimming", "random"]
SUITE = {
    "name": "export",
    "dataset": "mnist5k",
    "models": ["lenet300100"],
    "methods": [{"name": m} for m in ["dense", *STRUCTURED, "magnitude"]],
    "seeds": [0],
    "budget": {"dense_epochs": 1, "sparsify_epochs": 1, "finetune_epochs": 1, "max_batches_per_epoch": 2},
    "targets": {"flops": [0.5]},
    "measure": {"min_run_time_s": 0.01, "latency_batch_sizes": [1]},
}


def vibbench_command() -> list[str]:
    """Return the installed console script, or the module when the script is missing."""
    script = Path(sys.executable).parent / "vibbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "benchmarks.cli"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, dict[tuple[str, bool], dict]]:
    """Run the tiny suite once; return its results folder and records keyed by (method, at a target)."""
    root = tmp_path_factory.mktemp("export")
    suite_path = root / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(SUITE), encoding="utf-8")
    outcome = SuiteRunner(load_suite(str(suite_path)), RunOptions(results_dir=root / "results")).run()
    assert outcome.failed == []
    assert outcome.unreachable == 0

    records = {}
    for _, record in ResultsStore(root / "results").records():
        records[(record["config"]["method"], record["config"]["target"] is not None)] = record
    return root / "results", records


def test_every_run_saves_its_compact_network(results):
    results_dir, records = results
    store = ResultsStore(results_dir)

    for record in records.values():
        payload = store.load_checkpoint("compact", record["run_id"])
        model = load_compact(store.checkpoint_path("compact", record["run_id"]))

        assert payload is not None
        assert sum(p.numel() for p in model.parameters()) == record["metrics"]["params"]


@pytest.mark.parametrize("method", STRUCTURED)
def test_structured_file_smaller_than_dense(results, method):
    _, records = results
    metrics = records[(method, True)]["metrics"]

    assert metrics["file_bytes"] < metrics["dense_file_bytes"]
    assert metrics["sparse_file_bytes"] is None


def test_masked_file_only_shrinks_when_stored_sparse(results):
    _, records = results
    magnitude = records[("magnitude", False)]["metrics"]
    dense = records[("dense", False)]["metrics"]

    assert dense["file_bytes"] == dense["dense_file_bytes"]
    assert magnitude["file_bytes"] == magnitude["dense_file_bytes"]
    assert magnitude["sparse_file_bytes"] < magnitude["file_bytes"]


def test_exported_network_reproduces_recorded_error(results, tmp_path):
    results_dir, records = results
    exported = {}
    for (method, at_target), record in records.items():
        output = tmp_path / f"{method}-{at_target}.pt"
        export_run(results_dir, record["run_id"], "state_dict", output)
        exported[str(output)] = record["metrics"]["test_error_pct"]
    script = textwrap.dedent(
        """
        import json, sys
        import torch
        import benchmarks
        from benchmarks.data import load_dataset
        from benchmarks.training import evaluate

        test = load_dataset("mnist5k").test
        errors = {path: evaluate(benchmarks.load_compact(path), test, torch.device("cpu")) for path in sys.argv[1:]}
        print(json.dumps(errors))
        """
    )

    done = subprocess.run([sys.executable, "-c", script, *exported], capture_output=True, text=True, check=True)

    assert json.loads(done.stdout.strip().splitlines()[-1]) == exported


def test_cli_export_writes_file_and_summary(results, tmp_path):
    results_dir, records = results
    record = records[("vibnet", True)]
    output = tmp_path / "vibnet.pt"

    done = subprocess.run(
        [*vibbench_command(), "export", record["run_id"][:8], "--results-dir", str(results_dir),
         "--format", "state_dict", "--output", str(output)],
        capture_output=True, text=True,
    )
    summary = json.loads(output.with_name("vibnet.pt.json").read_text(encoding="utf-8"))

    assert done.returncode == 0, done.stderr
    assert summary["run_id"] == record["run_id"]
    assert summary["file_bytes"] == output.stat().st_size
    assert summary["metrics"]["test_error_pct"] == record["metrics"]["test_error_pct"]
    assert summary["metrics"]["file_bytes"] < summary["metrics"]["dense_file_bytes"]
    assert [layer["type"] for layer in summary["layers"]][:2] == ["Flatten", "FeatureSelect"]


def test_torchscript_and_onnx_match_the_compact_network(results, tmp_path):
    results_dir, records = results
    record = records[("vibnet", True)]
    compact = tmp_path / "compact.pt"
    export_run(results_dir, record["run_id"], "state_dict", compact)
    export_run(results_dir, record["run_id"], "torchscript", tmp_path / "model.ts")
    formats = ["torchscript"]
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        pass  # NOTE: the onnx packages come with the dev extras; without them only TorchScript is checked
    else:
        export_run(results_dir, record["run_id"], "onnx", tmp_path / "model.onnx")
        formats.append("onnx")
    script = textwrap.dedent(
        """
        import sys, warnings
        import torch
        import benchmarks

        folder = sys.argv[1]
        images = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = benchmarks.load_compact(folder + "/compact.pt")(images)
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(folder + "/model.ts")(images)
        print("torchscript", float((scripted - expected).abs().max()))
        if "onnx" in sys.argv[2:]:
            from onnx.reference import ReferenceEvaluator
            logits = ReferenceEvaluator(folder + "/model.onnx").run(None, {"images": images.numpy()})[0]
            print("onnx", float((torch.from_numpy(logits) - expected).abs().max()))
        """
    )

    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), *formats], capture_output=True, text=True,
                          check=True)
    differences = dict(line.split() for line in done.stdout.strip().splitlines())

    assert set(differences) == set(formats)
    assert all(float(value) < 1e-4 for value in differences.values())


def test_export_errors_name_the_problem(results, tmp_path):
    results_dir, records = results
    output = tmp_path / "x.pt"

    with pytest.raises(ExportError, match="no run 'ffffffffffff'"):
        export_run(results_dir, "ffffffffffff", "state_dict", output)
    with pytest.raises(ExportError, match="too short"):
        export_run(results_dir, "ab", "state_dict", output)
    with pytest.raises(ExportError, match="no runs/ folder"):
        export_run(tmp_path / "missing", "abcdef", "state_dict", output)
    with pytest.raises(ExportError, match="is a folder"):
        export_run(results_dir, records[("dense", False)]["run_id"], "state_dict", tmp_path)
    done = subprocess.run([*vibbench_command(), "export", "ffffffffffff", "--results-dir", str(results_dir),
                           "--output", str(output)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "ffffffffffff" in done.stderr


def test_specs_round_trip_every_layer_type():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.1),
        nn.Conv2d(4, 3, 3, stride=2), nn.AvgPool2d(1), nn.Flatten(), nn.Linear(3, 5), nn.BatchNorm1d(5),
        nn.LeakyReLU(0.2), nn.Linear(5, 2),
    ).eval()
    rebuilt = build_from_specs(layer_specs(model))
    rebuilt.load_state_dict(model.state_dict())
    images = torch.randn(3, 1, 8, 8)

    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), model(images))


def test_feature_select_round_trips_through_a_file(tmp_path):
    model = nn.Sequential(nn.Flatten(), FeatureSelect(torch.tensor([0, 5, 7]), in_features=9), nn.Linear(3, 2)).eval()
    path = tmp_path / "compact.pt"
    torch.save({"layers": layer_specs(model), "state": model.state_dict()}, path)

    rebuilt = load_compact(path)

    assert torch.equal(rebuilt[1].index, torch.tensor([0, 5, 7]))
    images = torch.randn(4, 1, 3, 3)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))


def test_unknown_layer_is_named():
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    model = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), scale=Scale()))

    with pytest.raises(ExportError, match="layer 'scale' is a Scale"):
        layer_specs(model)


def test_sparse_bytes_shrink_with_sparsity():
    dense = nn.Linear(200, 200)
    sparse = nn.Linear(200, 200)
    with torch.no_grad():
        sparse.weight.mul_(torch.rand(200, 200, generator=torch.Generator().manual_seed(0)) < 0.1)

    assert sparse_state_dict_bytes(sparse) < state_dict_bytes(sparse) / 3
    assert sparse_state_dict_bytes(dense) > state_dict_bytes(dense)
