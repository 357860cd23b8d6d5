"""Training batches: the same order with and without DataLoader workers."""

from __future__ import annotations

import torch

from benchmarks.data import Split, batches


def _split() -> Split:
    images = torch.arange(23 * 4, dtype=torch.float32).view(23, 1, 2, 2)
    return Split(images, torch.arange(23) % 10)


def test_workers_keep_batch_order():
    plain = list(batches(_split(), 5, torch.Generator().manual_seed(3)))
    loaded = list(batches(_split(), 5, torch.Generator().manual_seed(3), workers=2))

    assert len(loaded) == len(plain) == 5
    for (images_a, labels_a), (images_b, labels_b) in zip(plain, loaded):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


def test_last_batch_kept():
    sizes = [labels.numel() for _, labels in batches(_split(), 5, shuffle=False)]

    assert sizes == [5, 5, 5, 5, 3]
