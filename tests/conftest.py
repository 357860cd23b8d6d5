"""Fixtures shared by the test files: a seeded generator and a state randomizer."""

from __future__ import annotations

import logging
import signal
from typing import Callable

import pytest
import torch
from torch import nn

import vib


@torch.no_grad()
def _randomize_state(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Move gates and BatchNorm layers away from their initial values, in place.

    Gate ``mu`` is drawn from N(0, 1), so some units get a negative ``mu``;
    ``log sigma^2`` is drawn from N(-2, 1). BatchNorm layers get random
    running statistics (variances in [0.5, 1.5]) and random affine terms.
    """
    for gate in vib.gates(model).values():
        gate.mu.copy_(torch.randn(gate.num_units, generator=generator))
        gate.log_sigma2.copy_(torch.randn(gate.num_units, generator=generator) - 2.0)

    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            count = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(count, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
            module.weight.copy_(torch.randn(count, generator=generator))
            module.bias.copy_(0.1 * torch.randn(count, generator=generator))
    return model


@pytest.fixture
def generator() -> torch.Generator:
    """Return a CPU generator seeded with 0, so every test draws the same values."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def randomize() -> Callable[[nn.Module, torch.Generator], nn.Module]:
    """Return the function that randomizes gates and BatchNorm layers of a model in place."""
    return _randomize_state


@pytest.fixture
def cli(capsys):
    """Return a function that runs ``main`` in process and returns (status, stdout, stderr).

    ``main`` sets up logging and a SIGTERM handler for the whole process, so
    both are restored afterwards.
    """
    from benchmarks.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm = signal.getsignal(signal.SIGTERM)

    def invoke(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield invoke
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)
