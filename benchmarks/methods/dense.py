"""The unpruned reference, trained for the same total number of epochs."""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.methods.base import PruningMethod
from benchmarks.registry import METHODS


@METHODS.register("dense")
class Dense(PruningMethod):
    """No penalty and no pruning: the reference every method is compared with."""

    name = "dense"
    prunes = "nothing"

    def sites(self, model: nn.Module) -> list[str]:
        return []

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def apply(self, model: nn.Module, keep: dict[str, torch.Tensor], example_input: torch.Tensor) -> nn.Module:
        return copy.deepcopy(model)
