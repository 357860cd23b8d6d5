"""Tiny datasets written in torchvision's exact file formats, for tests that need no downloads.

The writers produce the files that torchvision's own ``MNIST``,
``FashionMNIST``, ``CIFAR10`` and ``CIFAR100`` classes read, in the folders
they look in under a root directory:

- ``MNIST/raw`` and ``FashionMNIST/raw``: the four uncompressed idx files
  (big-endian header: magic number ``0x0803`` for a 3-D uint8 array or
  ``0x0801`` for a 1-D one, then one 32-bit size per dimension, then the
  bytes);
- ``cifar-10-batches-py``: pickled dicts ``data_batch_1`` ... ``data_batch_5``
  and ``test_batch`` (``data``: uint8 rows of 3,072 values, channel-major;
  ``labels``), and ``batches.meta`` (``label_names``);
- ``cifar-100-python``: ``train`` and ``test`` (``data``, ``fine_labels``,
  ``coarse_labels``) and ``meta`` (``fine_label_names``,
  ``coarse_label_names``).

Checksums: torchvision's CIFAR classes compare every file's MD5 with the
originals' (the class attributes ``train_list``, ``test_list`` and ``meta``),
and tiny files can never match. The tests therefore replace those class
attributes with the tiny files' own MD5 sums, so torchvision still runs its
integrity check, now against the files the test wrote. Library code is not
touched. In-process tests do this with ``pytest.MonkeyPatch``
(``patch_cifar_checksums``). A test that runs the ``vibbench`` executable in
a subprocess puts a ``sitecustomize.py`` that does the same on that
process's ``PYTHONPATH`` (``write_checksum_hook``), because Python imports
``sitecustomize`` at start-up. MNIST needs none of this, because torchvision
only checks that its raw files exist.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
_IDX_UBYTE = 0x08  # the idx type code of unsigned bytes


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic (type, dimensions), sizes, then the data."""
    if array.dtype != np.uint8:
        raise TypeError(f"idx writer takes uint8 arrays, got {array.dtype}")
    header = struct.pack(">I", (_IDX_UBYTE << 8) | array.ndim)
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + array.tobytes())


def _images_and_labels(count: int, shape: tuple[int, ...], classes: int, rng: np.random.Generator):
    """Return random uint8 images and labels that cycle through every class."""
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    labels = np.arange(count) % classes
    return images, labels


def write_mnist(root: Path, train: int = 64, test: int = 32, folder: str = "MNIST", seed: int = 0) -> Path:
    """Write tiny MNIST-format idx files under ``root/folder/raw`` and return that folder.

    ``folder="FashionMNIST"`` writes the Fashion-MNIST layout, which is the same format.

    Example:
        >>> import tempfile
        >>> raw = write_mnist(Path(tempfile.mkdtemp()), train=20, test=10)
        >>> sorted(p.name for p in raw.iterdir())[:2]
        ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images, labels = _images_and_labels(count, (28, 28), 10, rng)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return raw


def _pickle(path: Path, payload: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)


def write_cifar10(root: Path, per_batch: int = 16, test: int = 32, seed: int = 0) -> Path:
    """Write tiny CIFAR-10 pickles (five training batches of ``per_batch`` images) and return the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test if name == "test_batch" else per_batch
        images, labels = _images_and_labels(count, (3 * 32 * 32,), 10, rng)
        _pickle(folder / name, {"batch_label": name, "data": images, "labels": labels.tolist(),
                                "filenames": [f"{name}_{i}.png" for i in range(count)]})
    label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": label_names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return folder


def write_cifar100(root: Path, train: int = 80, test: int = 32, seed: int = 0) -> Path:
    """Write tiny CIFAR-100 pickles (``train``, ``test``, ``meta``) and return the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", train), ("test", test)):
        images, fine = _images_and_labels(count, (3 * 32 * 32,), 100, rng)
        _pickle(folder / name, {"data": images, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                                "filenames": [f"{name}_{i}.png" for i in range(count)]})
    _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                              "coarse_label_names": [f"superclass{i}" for i in range(20)]})
    return folder


def write_all(root: Path) -> Path:
    """Write tiny MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 under ``root`` and return it."""
    write_mnist(root)
    write_mnist(root, folder="FashionMNIST", seed=1)
    write_cifar10(root)
    write_cifar100(root)
    return Path(root)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_checksums(root: Path) -> dict[str, dict]:
    """Return, per torchvision CIFAR class name, the class attributes that name the files under ``root`` with their MD5s.

    Only folders that exist under ``root`` are included.
    """
    import torchvision

    overrides: dict[str, dict] = {}
    for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):
        folder = Path(root) / cls.base_folder
        if not folder.is_dir():
            continue
        overrides[cls.__name__] = {
            "train_list": [[name, _md5(folder / name)] for name, _ in cls.train_list],
            "test_list": [[name, _md5(folder / name)] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": _md5(folder / cls.meta["filename"])},
        }
    return overrides


def patch_cifar_checksums(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make torchvision's CIFAR classes expect the MD5s of the tiny files under ``root`` (this process only)."""
    import torchvision

    for class_name, attributes in cifar_checksums(root).items():
        cls = getattr(torchvision.datasets, class_name)
        for attribute, value in attributes.items():
            monkeypatch.setattr(cls, attribute, value)


_HOOK = '''"""Test-only start-up hook: torchvision's CIFAR classes expect the tiny test files' MD5s."""
import json

import torchvision.datasets

for _name, _attributes in json.loads({payload!r}).items():
    for _attribute, _value in _attributes.items():
        setattr(getattr(torchvision.datasets, _name), _attribute, _value)
'''


def write_checksum_hook(hook_dir: Path, root: Path) -> Path:
    """Write ``hook_dir/sitecustomize.py`` that applies ``cifar_checksums(root)`` at interpreter start-up.

    Put ``hook_dir`` on the subprocess's ``PYTHONPATH``; return ``hook_dir``.
    """
    hook_dir = Path(hook_dir)
    hook_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(cifar_checksums(root))
    (hook_dir / "sitecustomize.py").write_text(_HOOK.format(payload=payload), encoding="utf-8")
    return hook_dir
