"""Micro-benchmarks of the information-bottleneck gate against a plain multiply, and of its KL term.

The plain multiply (``x * w`` with a learnable per-channel ``w``) is the
cheapest layer that could take the gate's place. pytest-benchmark shows the
two side by side in the groups ``gate-forward`` and ``gate-backward``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vib
from vib import InformationBottleneck

# The input of LeNet-5's first gate at batch 64: 20 channels of 12 x 12.
SHAPE = (64, 20, 12, 12)


class PlainScale(nn.Module):
    """Multiply dimension 1 by a learnable weight: the gate without noise or KL."""

    def __init__(self, num_units: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="gate-forward")
def test_gate_forward_training(benchmark, features):
    gate = InformationBottleneck(SHAPE[1]).train()
    output = benchmark(gate, features)
    assert output.shape == features.shape


@pytest.mark.benchmark(group="gate-forward")
def test_gate_forward_evaluation(benchmark, features):
    gate = InformationBottleneck(SHAPE[1]).eval()
    with torch.no_grad():
        output = benchmark(gate, features)
    assert output.shape == features.shape


@pytest.mark.benchmark(group="gate-forward")
def test_plain_multiply_forward(benchmark, features):
    scale = PlainScale(SHAPE[1])
    output = benchmark(scale, features)
    assert output.shape == features.shape


def _forward_backward(layer: nn.Module, features: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    layer(features).sum().backward()


@pytest.mark.benchmark(group="gate-backward")
def test_gate_forward_backward(benchmark, features):
    gate = InformationBottleneck(SHAPE[1]).train()
    inputs = features.requires_grad_()
    benchmark(_forward_backward, gate, inputs)
    assert gate.mu.grad is not None
    assert gate.log_sigma2.grad is not None


@pytest.mark.benchmark(group="gate-backward")
def test_plain_multiply_forward_backward(benchmark, features):
    scale = PlainScale(SHAPE[1])
    inputs = features.requires_grad_()
    benchmark(_forward_backward, scale, inputs)
    assert scale.weight.grad is not None


@pytest.mark.benchmark(group="kl")
def test_gate_kl(benchmark, features):
    gate = InformationBottleneck(SHAPE[1]).train()
    gate(features)  # records the spatial size the KL term scales by
    value = benchmark(gate.kl)
    assert value.ndim == 0
    assert torch.isfinite(value)


@pytest.mark.benchmark(group="kl")
def test_kl_total_lenet5(benchmark):
    from benchmarks.models import lenet_5

    gated = vib.insert_gates(lenet_5())
    gated(torch.zeros(1, 1, 28, 28))
    value = benchmark(vib.kl_total, gated)
    assert value.ndim == 0
    assert float(value.detach()) > 0.0
