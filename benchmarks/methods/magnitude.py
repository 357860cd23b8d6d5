"""Global unstructured magnitude pruning on a gradual (cubic) schedule."""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from baselines import apply_masks, cubic_sparsity, make_permanent, prunable_weights, prune_to_sparsity
from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS


class MagnitudeParams(MethodParams):
    final_sparsity: float = Field(0.9, ge=0, lt=1, description="fraction of weights masked at the end of the sparsity phase")


def _weight_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return f"{name}.weight"
    raise KeyError("module not found in model")


@METHODS.register("magnitude")
class MagnitudePruning(PruningMethod):
    """Han et al. 2015 with Zhu and Gupta's schedule: mask the smallest weights globally.

    NOTE: a masked network keeps its dense tensors, so its latency and file
    size do not shrink. The non-zero counts are what sparse storage would need.
    """

    name = "magnitude"
    structured = False
    prunes = "single weights"
    strength = "final_sparsity"
    Params = MagnitudeParams

    def prepare(self, model: nn.Sequential) -> nn.Sequential:
        return copy.deepcopy(model)

    def on_epoch_end(self, model: nn.Module, epoch: int, num_epochs: int) -> None:
        prune_to_sparsity(model, cubic_sparsity(epoch + 1, num_epochs, self.params.final_sparsity))

    def sites(self, model: nn.Module) -> list[str]:
        return [_weight_name(model, module) for module, _ in prunable_weights(model)]

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        scores = {}
        for module, _ in prunable_weights(model):
            weight = module.weight_orig * module.weight_mask if hasattr(module, "weight_mask") else module.weight
            scores[_weight_name(model, module)] = weight.detach().abs()
        return scores

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        keep = {}
        for module, _ in prunable_weights(model):
            mask = getattr(module, "weight_mask", torch.ones_like(module.weight))
            keep[_weight_name(model, module)] = mask.detach().bool()
        return keep

    def apply(self, model: nn.Module, keep: dict[str, torch.Tensor], example_input: torch.Tensor) -> nn.Module:
        pruned = copy.deepcopy(model)
        make_permanent(pruned)
        apply_masks(pruned, keep)
        return pruned

    def finalize(self, model: nn.Module) -> nn.Module:
        make_permanent(model)
        return model
