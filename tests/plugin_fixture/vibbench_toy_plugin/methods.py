"""A structured method that ranks units by the L2 norm of their incoming weights.

Registered by importing this module (the entry point ``toy = "vibbench_toy_plugin.methods"``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS
from benchmarks.structure import find_sites


class ToyNormParams(MethodParams):
    fraction: float = Field(0.5, ge=0, lt=1, description="fraction of each layer's units removed at the natural point")


@METHODS.register("toy_norm")
class ToyNorm(PruningMethod):
    """A method that removes the hidden units with the smallest incoming weight norm."""

    name = "toy_norm"
    prunes = "neurons"
    Params = ToyNormParams

    def sites(self, model: nn.Module) -> list[str]:
        return [site.name for site in find_sites(model, include_input=False)]

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        layers = dict(model.named_children())
        return {site: layers[site].weight.detach().flatten(1).norm(dim=1) for site in self.sites(model)}

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        keep = {}
        for site, score in self.scores(model).items():
            mask = torch.ones(score.numel(), dtype=torch.bool)
            mask[score.argsort()[: int(self.params.fraction * score.numel())]] = False
            keep[site] = mask
        return keep
