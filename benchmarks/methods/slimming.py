"""Network slimming: L1 on BatchNorm scales and one global threshold."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from baselines import batchnorm_scales, global_threshold, insert_batchnorm, slimming_penalty
from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS


class SlimmingParams(MethodParams):
    strength: float = Field(1e-4, gt=0, description="lambda, the multiplier of sum(abs(gamma))")
    fraction: float = Field(
        0.6, ge=0, lt=1, description="fraction of all channels below the global abs(gamma) threshold"
    )


@METHODS.register("slimming")
class NetworkSlimming(PruningMethod):
    """Liu et al. 2017: prune the channels with the smallest BatchNorm scales, globally."""

    name = "slimming"
    prunes = "neurons, channels"
    strength = "strength"
    Params = SlimmingParams

    def prepare(self, model: nn.Sequential) -> nn.Sequential:
        return insert_batchnorm(model)

    def sites(self, model: nn.Module) -> list[str]:
        return list(batchnorm_scales(model))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return slimming_penalty(list(batchnorm_scales(model).values()), self.params.strength)

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {site: scale.detach() for site, scale in batchnorm_scales(model).items()}

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        scales = self.scores(model)
        threshold = global_threshold(scales, self.params.fraction)
        keep = {}
        for site, scale in scales.items():
            mask = scale > threshold
            # One global threshold can empty a layer; its strongest channel stays.
            mask[scale.argmax()] = True
            keep[site] = mask
        return keep
