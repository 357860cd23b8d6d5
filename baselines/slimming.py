"""Network slimming: an L1 penalty on BatchNorm scales, then channel removal.

Liu, Li, Shen, Huang, Yan and Zhang, "Learning Efficient Convolutional
Networks through Network Slimming", ICCV 2017 (arXiv:1708.06519). Every
prunable layer is followed by a BatchNorm whose scale ``gamma`` measures its
channel; the penalty is ``lambda * sum(abs(gamma))`` and one global threshold
on ``abs(gamma)`` decides which channels go.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def _bn_name(name: str) -> str:
    return f"{name}_bn"


def insert_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """Return a copy of ``model`` with a BatchNorm after each hidden weighted layer.

    The last weighted layer (the classifier) gets none, and a layer already
    followed by a BatchNorm keeps it. The BatchNorm after ``conv1`` is
    named ``conv1_bn``.
    """
    children = list(model.named_children())
    weighted = [i for i, (_, m) in enumerate(children) if isinstance(m, (nn.Linear, nn.Conv2d))]
    layers: OrderedDict[str, nn.Module] = OrderedDict()

    for i, (name, module) in enumerate(children):
        layers[name] = copy.deepcopy(module)
        is_hidden = i in weighted[:-1]
        followed_by_bn = i + 1 < len(children) and isinstance(children[i + 1][1], _BATCHNORM)
        if not is_hidden or followed_by_bn:
            continue
        if isinstance(module, nn.Conv2d):
            layers[_bn_name(name)] = nn.BatchNorm2d(module.out_channels)
        else:
            layers[_bn_name(name)] = nn.BatchNorm1d(module.out_features)
    return nn.Sequential(layers)


def batchnorm_scales(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """Return ``abs(gamma)`` of the BatchNorm after each weighted layer, keyed by that layer's name."""
    children = list(model.named_children())
    scales = {}
    for (name, module), (_, following) in zip(children, children[1:]):
        if isinstance(module, (nn.Linear, nn.Conv2d)) and isinstance(following, _BATCHNORM):
            scales[name] = following.weight.abs()
    return scales


def slimming_penalty(scales: list[torch.Tensor], strength: float) -> torch.Tensor:
    """Return ``strength * sum(abs(gamma))`` over the given scales.

    Example:
        >>> slimming_penalty([torch.tensor([0.5, -2.0])], 0.1)
        tensor(0.2500)
    """
    if not scales:
        return torch.zeros(())
    return strength * torch.cat([s.reshape(-1) for s in scales]).abs().sum()


def global_threshold(scales: dict[str, torch.Tensor], fraction: float) -> float:
    """Return the ``abs(gamma)`` below which ``fraction`` of all channels fall.

    Example:
        >>> global_threshold({"a": torch.tensor([0.1, 0.4]), "b": torch.tensor([0.2, 0.3])}, 0.5)
        0.25
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    values = torch.cat([s.detach().reshape(-1).abs() for s in scales.values()]).sort().values
    count = int(round(fraction * values.numel()))
    if count == 0:
        return 0.0
    return float((values[count - 1] + values[count]) / 2)
