"""Micro-benchmarks of the measurement functions on LeNet-5."""

from __future__ import annotations

import pytest
import torch

from benchmarks import measure
from benchmarks.models import lenet_5

INPUT_SHAPE = (1, 28, 28)
# fvcore's multiply-adds of LeNet-5 (20-50-800-500) for one 28 x 28 image.
LENET5_FLOPS = 2_293_000


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return lenet_5().eval()


@pytest.mark.benchmark(group="measure")
def test_flops_fvcore_lenet5(benchmark, model):
    flops, unsupported = benchmark(measure.flops_fvcore, model, INPUT_SHAPE)
    assert flops == LENET5_FLOPS
    assert isinstance(unsupported, dict)


@pytest.mark.benchmark(group="measure")
def test_activation_bytes_lenet5(benchmark, model):
    total = benchmark(measure.activation_bytes, model, INPUT_SHAPE)
    assert total > 0
    assert total % 4 == 0  # float32 outputs


@pytest.mark.benchmark(group="measure")
def test_latency_lenet5(benchmark, model):
    # A tiny min_run_time keeps the call short; the result is not checked against any time.
    timing = benchmark(measure.latency, model, INPUT_SHAPE, 1, torch.device("cpu"), 0.005, 1)
    assert timing.batch_size == 1
    assert timing.count >= 1
    assert timing.median_ms > 0.0
