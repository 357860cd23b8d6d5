"""The paper-scale suites: their files, torchvision's dataset loaders, and a CLI run of each smoke variant.

Nothing is downloaded: tests/fixtures_torchvision.py writes tiny datasets in
torchvision's exact formats, and the real torchvision classes read them
(see that file for how the CIFAR checksums are handled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmarks.data  # noqa: F401  (registers the datasets)
import benchmarks.methods  # noqa: F401  (registers the methods)
import benchmarks.models  # noqa: F401  (registers the models)
import vib
from benchmarks.config import expand_runs, load_suite
from benchmarks.data import DatasetError, augment_batch, dataset_options, load_dataset
from benchmarks.models import vgg_16

from fixtures_torchvision import (
    patch_cifar_checksums,
    write_all,
    write_checksum_hook,
    write_cifar10,
    write_mnist,
)

PAPER_SUITES = ["paper-mnist", "paper-cifar10", "paper-cifar100"]
SMOKE = {suite: f"{suite}-smoke" for suite in PAPER_SUITES}
VIBNET_BIN = Path(sys.executable).parent / "vibbench"

# VIBNet's reference KL multipliers per stage, for gates placed before the pooling.
STAGE_MULTIPLIER = {1: 1 / 32, 2: 1 / 16, 3: 1 / 8, 4: 1 / 4, 5: 1 / 2}
STAGE_OF_CONV = {f"conv{i}": stage for stage, convs in
                 enumerate([(1, 2), (3, 4), (5, 6, 7), (8, 9, 10), (11, 12, 13)], start=1) for i in convs}


# Suite files --------------------------------------------------------------


@pytest.mark.parametrize("suite_name", PAPER_SUITES + list(SMOKE.values()))
def test_suites_load_and_expand(suite_name: str) -> None:
    suite = load_suite(suite_name)
    assert expand_runs(suite)
    assert set(suite.dataset_options) <= set(dataset_options(suite.dataset))


@pytest.mark.parametrize("suite_name", PAPER_SUITES)
def test_smoke_variant_keeps_paper_settings(suite_name: str) -> None:
    paper, smoke = load_suite(suite_name), load_suite(SMOKE[suite_name])
    assert (smoke.dataset, smoke.models) == (paper.dataset, paper.models)
    assert smoke.dataset_options.get("augment") == paper.dataset_options.get("augment")
    assert smoke.budget.optimizer == paper.budget.optimizer
    entries = {entry.name: entry for entry in paper.methods}
    for entry in smoke.methods:
        reference = entries[entry.name]
        for key, value in entry.params.items():
            allowed = reference.sweep.get(key, [reference.params.get(key)])
            assert value in allowed, f"{smoke.name}: {entry.name}.{key}={value!r} is not a value of {suite_name}"


def test_cifar_smoke_variants_cover_methods() -> None:
    paper = {entry.name for entry in load_suite("paper-cifar10").methods}
    smoke = {entry.name for name in ("paper-cifar10-smoke", "paper-cifar100-smoke") for entry in load_suite(name).methods}
    assert smoke == paper


@pytest.mark.parametrize("suite_name", ["paper-cifar10", "paper-cifar100"])
def test_vgg_kl_factors_match_reference(suite_name: str) -> None:
    """Check that factor times positions equals the reference's, whose gate reads the map before the pooling."""
    factors = next(entry for entry in load_suite(suite_name).methods if entry.name == "vibnet").params["kl_factors"]
    model = vgg_16()
    gated = vib.insert_gates(model, kl_factors=factors)
    assert set(factors) == set(STAGE_OF_CONV), "kl_factors must name each convolution of vgg16"

    positions_before_pool = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda module, args, out, name=name: positions_before_pool.__setitem__(name, out.shape[2] * out.shape[3]))
        for name in STAGE_OF_CONV]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
        gated.eval()(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()

    for name, gate in vib.gates(gated).items():
        if name == "fc1":
            assert gate.kl_factor == 1.0
            continue
        ours = gate.kl_factor * int(gate.spatial_size)
        reference = STAGE_MULTIPLIER[STAGE_OF_CONV[name]] * positions_before_pool[name]
        assert ours == pytest.approx(reference), name


# Data loaders --------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize(
    ("name", "shape", "classes", "train_total"),
    [("mnist", (1, 28, 28), 10, 64), ("fashion_mnist", (1, 28, 28), 10, 64),
     ("cifar10", (3, 32, 32), 10, 80), ("cifar100", (3, 32, 32), 100, 80)],
)
def test_torchvision_loaders_read_files(data_root, monkeypatch, name, shape, classes, train_total) -> None:
    patch_cifar_checksums(monkeypatch, data_root)
    data = load_dataset(name, data_dir=data_root, val_size=16)
    assert data.spec.input_shape == shape
    assert data.spec.num_classes == classes
    assert (len(data.train), len(data.val), len(data.test)) == (train_total - 16, 16, 32)
    assert data.train.images.dtype == torch.float32
    assert data.train.labels.dtype == torch.int64
    assert tuple(data.test.images.shape[1:]) == shape
    assert int(data.train.labels.max()) < classes
    assert data.source.startswith("torchvision ")


def test_mnist_pixels_read_and_normalised(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, train=20, test=10)
    header = 16  # magic, count, rows, columns: four big-endian 32-bit integers
    pixels = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[header:], dtype=np.uint8).reshape(10, 28, 28)
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    data = load_dataset("mnist", data_dir=tmp_path, val_size=4)
    expected = (torch.from_numpy(pixels.astype(np.float32)) / 255.0 - 0.1307) / 0.3081
    torch.testing.assert_close(data.test.images[:, 0], expected)
    assert data.test.labels.tolist() == labels.tolist()


def test_cifar_images_are_channel_first(tmp_path: Path, monkeypatch) -> None:
    folder = write_cifar10(tmp_path, per_batch=4, test=4)
    patch_cifar_checksums(monkeypatch, tmp_path)
    import pickle

    with open(folder / "test_batch", "rb") as handle:
        rows = pickle.load(handle, encoding="latin1")["data"]
    data = load_dataset("cifar10", data_dir=tmp_path, val_size=4)
    red = torch.from_numpy(rows[:, :1024].reshape(-1, 32, 32).astype(np.float32)) / 255.0
    torch.testing.assert_close(data.test.images[:, 0], (red - 0.4914) / 0.2470)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_files_error_names_them(tmp_path: Path, name: str) -> None:
    folder, files = benchmarks.data.TORCHVISION_FILES[name]
    with pytest.raises(DatasetError) as caught:
        load_dataset(name, data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / folder) in message
    assert all(file in message for file in files)
    assert "--download" in message


def test_checksum_failure_is_reported(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=2, test=2)  # the real MD5 lists stay in place
    with pytest.raises(DatasetError, match="MD5"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_unreadable_files_raise_dataset_error(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, train=4, test=4)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x00\xff")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte is not an unsigned-byte idx file"):
        load_dataset("mnist", data_dir=tmp_path, val_size=2)


def test_truncated_cifar_file_is_named(tmp_path: Path, monkeypatch) -> None:
    folder = write_cifar10(tmp_path, per_batch=4, test=4)
    patch_cifar_checksums(monkeypatch, tmp_path)
    content = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="data_batch_3 in .* fail torchvision's MD5 check"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=4)


def test_missing_dir_and_unknown_options_fail() -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="valid dataset_options: val_size"):
        load_dataset("mnist", data_dir=Path("."), augment=True)


def test_synthetic_mnist_shape_and_seed() -> None:
    first = load_dataset("synthetic_mnist", train_size=12, val_size=3, test_size=5)
    second = load_dataset("synthetic_mnist", train_size=12, val_size=3, test_size=5)
    assert (len(first.train), len(first.val), len(first.test)) == (12, 3, 5)
    assert first.spec.input_shape == (1, 28, 28)
    assert first.spec.num_classes == 10
    assert torch.equal(first.train.images, second.train.images)
    with pytest.raises(DatasetError, match="at least 1"):
        load_dataset("synthetic_mnist", train_size=0)


def test_augmentation_crops_and_flips() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment_batch(images, torch.Generator().manual_seed(1), padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        crops = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    again = augment_batch(images, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(out, again)


# The smoke variants through the command line ------------------------------


@pytest.fixture(scope="module")
def cli_env(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a ``vibbench`` subprocess whose torchvision expects the tiny files' MD5s."""
    hook = write_checksum_hook(tmp_path_factory.mktemp("hook"), data_root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["CUDA_VISIBLE_DEVICES"] = ""  # --device auto picks the CPU here, as on a machine without a GPU
    # One thread, because two spinning OpenMP threads made these runs 3x slower on a shared, busy CPU.
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.parametrize("suite_name", list(SMOKE.values()))
def test_smoke_variant_runs_through_cli(suite_name: str, data_root: Path, cli_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    command = [str(VIBNET_BIN), "run", suite_name, "--data-dir", str(data_root), "--results-dir", str(results)]
    if suite_name != "paper-mnist-smoke":
        command.append("--no-report")  # the report is drawn once, for the MNIST variant
    completed = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    suite = load_suite(suite_name)
    records = [json.loads(path.read_text()) for path in sorted((results / "runs").glob("*.json"))]
    assert len(records) == len(expand_runs(suite))
    for record in records:
        assert record["status"] == "ok", record.get("error")
        metrics = record["metrics"]
        for key in ("test_error_pct", "val_error_pct", "params", "flops_fvcore", "activation_bytes", "latency", "widths"):
            assert key in metrics, key
        assert 0.0 <= metrics["test_error_pct"] <= 100.0
        assert metrics["latency"][0]["median_ms"] > 0
        environment = record["environment"]
        assert environment["device_type"] == "cpu"
        assert {"gpu", "cuda", "cudnn", "torch", "device"} <= set(environment)
        assert record["config"]["dataset"] == suite.dataset
    if suite_name == "paper-mnist-smoke":
        assert (results / "table.md").is_file()


def test_gpu_check_runs_on_cpu(cli_env) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    command = [sys.executable, str(script), "--device", "cpu", "--train-size", "100", "--val-size", "8",
               "--test-size", "8", "--max-batches", "1", "--methods", "dense", "vibnet"]
    completed = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("device: CPU")
    table = [line.split(" | ") for line in lines if line.startswith(("dense |", "vibnet |"))]
    assert [row[0] for row in table] == ["dense", "vibnet"]
    assert all(float(row[3]) > 0 for row in table)  # sparsify ms per step
    assert "estimate for paper-mnist, lenet5 rows" in lines[-1]
