"""Group lasso over each unit's outgoing (default) or incoming weights."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from baselines import group_lasso_penalty, incoming_group_norms, outgoing_group_norms
from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS
from benchmarks.structure import find_sites


class GroupLassoParams(MethodParams):
    strength: float = Field(1e-4, gt=0, description="lambda, the multiplier of the summed group norms")
    group: Literal["outgoing", "incoming"] = Field(
        "outgoing", description="a unit's group: its outgoing weights, or its incoming weights and bias"
    )
    threshold: float = Field(0.05, gt=0, description="a unit is pruned when its group norm falls below this")


@METHODS.register("group_lasso")
class GroupLasso(PruningMethod):
    """L1 group sparsity (Scardapane et al. 2017): prune units whose group norm is near zero."""

    name = "group_lasso"
    prunes = "input features, neurons, channels"
    strength = "strength"
    Params = GroupLassoParams

    def _norms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        modules = dict(model.named_children())
        include_input = self.params.group == "outgoing"
        norms = {}
        for site in find_sites(model, include_input=include_input):
            if self.params.group == "outgoing":
                norms[site.name] = outgoing_group_norms(modules[site.consumer], site.units)
            else:
                norms[site.name] = incoming_group_norms(modules[site.producer])
        return norms

    def sites(self, model: nn.Module) -> list[str]:
        return list(self._norms(model))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return group_lasso_penalty(list(self._norms(model).values()), self.params.strength)

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {site: norm.detach() for site, norm in self._norms(model).items()}

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        keep = {}
        for site, norm in self.scores(model).items():
            mask = norm >= self.params.threshold
            # A layer whose every group fell below the threshold keeps its strongest unit.
            mask[norm.argmax()] = True
            keep[site] = mask
        return keep
