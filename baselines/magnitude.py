"""Global unstructured magnitude pruning through ``torch.nn.utils.prune``.

Han, Pool, Tran and Dally, "Learning both Weights and Connections for
Efficient Neural Networks", NeurIPS 2015 (arXiv:1506.02626), on the gradual
schedule of Zhu and Gupta, "To prune, or not to prune", arXiv:1710.01878.

NOTE: masks keep the dense tensors, so a masked network is neither faster nor
smaller on disk until its weights are stored in a sparse format.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Return ``(module, "weight")`` for every Linear and Conv2d in ``model``."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def cubic_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Return the sparsity after ``step`` of ``total_steps`` on the cubic schedule.

    ``s = final + (initial - final) * (1 - step / total_steps) ** 3``.

    Example:
        >>> cubic_sparsity(0, 4, 0.9), cubic_sparsity(4, 4, 0.9)
        (0.0, 0.9)
    """
    if total_steps <= 0:
        return final
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def weight_count(model: nn.Module) -> int:
    """Return the number of prunable weights (Linear and Conv2d weights)."""
    return sum(getattr(m, name).numel() for m, name in prunable_weights(model))


def pruned_count(model: nn.Module) -> int:
    """Return how many prunable weights are currently masked to zero."""
    count = 0
    for module, name in prunable_weights(model):
        mask = getattr(module, f"{name}_mask", None)
        if mask is not None:
            count += int((mask == 0).sum().item())
    return count


@torch.no_grad()
def _refresh_masked(model: nn.Module) -> None:
    # prune sets ``weight = weight_orig * weight_mask`` in a forward pre-hook. Computed
    # with autograd on, that tensor is not a graph leaf and makes copy.deepcopy fail,
    # so it is recomputed here without autograd.
    for module, name in prunable_weights(model):
        if hasattr(module, f"{name}_mask"):
            setattr(module, name, getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask"))


def prune_to_sparsity(model: nn.Module, sparsity: float) -> None:
    """Mask the globally smallest-magnitude weights until ``sparsity`` of them are zero.

    Repeated calls only ever add to the mask, as a gradual schedule needs.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    wanted = int(round(sparsity * weight_count(model)))
    extra = wanted - pruned_count(model)
    if extra <= 0:
        return
    # Rank the current weights: ``module.weight`` is only refreshed by a forward pass,
    # so after an optimizer step it still contains the previous values.
    scores = {}
    for module, name in prunable_weights(model):
        if hasattr(module, f"{name}_mask"):
            scores[(module, name)] = (getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")).detach()
        else:
            scores[(module, name)] = getattr(module, name).detach()
    prune.global_unstructured(
        prunable_weights(model), pruning_method=prune.L1Unstructured, importance_scores=scores, amount=extra
    )
    _refresh_masked(model)


def apply_masks(model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Mask the weights by explicit boolean masks keyed by parameter name (``"fc1.weight"``).

    A weight that is already masked keeps its old zeros: the old mask is made
    permanent first, so masks only ever grow.
    """
    modules = dict(model.named_modules())
    for param_name, mask in keep.items():
        module_name, _, attribute = param_name.rpartition(".")
        module = modules[module_name]
        if prune.is_pruned(module) and hasattr(module, f"{attribute}_mask"):
            prune.remove(module, attribute)
        prune.custom_from_mask(module, attribute, mask.to(getattr(module, attribute).dtype))
    _refresh_masked(model)


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight so that the zeros stay without hooks."""
    for module, name in prunable_weights(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            prune.remove(module, name)
