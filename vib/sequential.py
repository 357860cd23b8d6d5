"""Insert, read and fold information-bottleneck gates in an ``nn.Sequential``.

A gate goes after each hidden layer's activation (and after a pooling layer
that follows it), right before the next Flatten or weighted layer, so that
only linear steps sit between a gate and the layer it feeds. For an MLP whose
first weighted layer is ``nn.Linear`` a gate also goes on the input features,
because VIBNet prunes input pixels as well.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from vib.gate import InformationBottleneck

WEIGHTED = (nn.Linear, nn.Conv2d)

# Modules that may sit between a gate and the layer it feeds when the gate is
# folded: each is linear and acts on every channel alike (Dropout is the
# identity in evaluation mode, when folding happens).
_FOLDABLE_BETWEEN = (nn.Flatten, nn.Dropout, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity)

INPUT_SITE = "input"


def _gate_name(site: str) -> str:
    return f"{site}_ib"


def _units_out(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def insert_gates(
    model: nn.Sequential,
    gate_input: bool = True,
    kl_factors: dict[str, float] | None = None,
    threshold: float = 0.0,
    init_log_sigma2: float = -9.0,
) -> nn.Sequential:
    """Return a copy of ``model`` with a gate after every hidden layer.

    Args:
        model: a flat ``nn.Sequential`` of layers; names are kept.
        gate_input: also gate the input features when the first weighted
            layer is ``nn.Linear``.
        kl_factors: per-site KL multiplier, keyed by the producing layer's
            name (``"input"`` for the input features); missing sites get 1.
        threshold: the gates' ``log_alpha`` threshold.
        init_log_sigma2: initial ``log sigma^2`` of every gate.

    The gate of the layer named ``fc1`` is named ``fc1_ib``.

    Example:
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> [name for name, _ in insert_gates(m).named_children()]
        ['0', 'input_ib', '1', '2', '1_ib', '3']
    """
    kl_factors = kl_factors or {}
    children = list(model.named_children())
    weighted = [i for i, (_, module) in enumerate(children) if isinstance(module, WEIGHTED)]
    if not weighted:
        raise ValueError("insert_gates found no nn.Linear or nn.Conv2d in the model")

    # Position -> (site name, units): a gate is placed before children[position].
    placements: dict[int, tuple[str, int]] = {}
    first = children[weighted[0]][1]
    if gate_input and isinstance(first, nn.Linear):
        placements[weighted[0]] = (INPUT_SITE, first.in_features)

    for producer, consumer in zip(weighted[:-1], weighted[1:]):
        position = consumer
        for i in range(producer + 1, consumer):
            if isinstance(children[i][1], nn.Flatten):
                position = i
                break
        name, layer = children[producer]
        placements[position] = (name, _units_out(layer))

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (name, module) in enumerate(children):
        if i in placements:
            site, units = placements[i]
            layers[_gate_name(site)] = InformationBottleneck(
                units,
                kl_factor=kl_factors.get(site, 1.0),
                threshold=threshold,
                init_log_sigma2=init_log_sigma2,
            )
        layers[name] = copy.deepcopy(module)
    return nn.Sequential(layers)


def gates(model: nn.Module) -> dict[str, InformationBottleneck]:
    """Return the gates of ``model`` keyed by site (the producing layer's name)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, InformationBottleneck):
            site = name.rsplit(".", 1)[-1]
            found[site[: -len("_ib")] if site.endswith("_ib") else site] = module
    return found


def kl_total(model: nn.Module) -> torch.Tensor:
    """Return the sum of every gate's scaled KL term (zero when there is none)."""
    terms = [gate.kl() for gate in gates(model).values()]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def log_alphas(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return ``log sigma^2 - log mu^2`` per unit for every gate, detached."""
    return {site: gate.log_alpha().detach() for site, gate in gates(model).items()}


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return each gate's boolean keep mask at its threshold."""
    return {site: gate.mask().detach().bool() for site, gate in gates(model).items()}


def fold_gates(model: nn.Sequential, keep: dict[str, torch.Tensor] | None = None) -> nn.Sequential:
    """Return a gate-free copy whose next layers absorb each gate's ``mu``.

    The input weights of the layer after a gate are multiplied by
    ``mu * keep`` per unit, so the result equals the gated network in
    evaluation mode. Pruned units get a zero scale; removing them is the
    caller's job. ``keep`` defaults to each gate's own mask, site by site.

    Raises:
        ValueError: when something other than a linear, channel-wise step
            (Flatten, Dropout, average pooling) sits between a gate and the
            next weighted layer, because ``mu`` would then not commute with it.
    """
    children = list(model.named_children())
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    pending: list[tuple[str, torch.Tensor]] = []

    for name, module in children:
        if isinstance(module, InformationBottleneck):
            site = name[: -len("_ib")] if name.endswith("_ib") else name
            # Sites missing from ``keep`` use the gate's own mask.
            unit_keep = keep[site].to(module.mu.dtype) if keep is not None and site in keep else module.mask()
            pending.append((name, (module.mu * unit_keep).detach()))
            continue

        module = copy.deepcopy(module)
        if pending and isinstance(module, WEIGHTED):
            gate_name, scale = pending.pop()
            _scale_inputs(module, scale, gate_name)
        elif pending and not isinstance(module, _FOLDABLE_BETWEEN):
            raise ValueError(
                f"cannot fold gate {pending[-1][0]!r} across {name!r} ({type(module).__name__}); "
                "only Flatten, Dropout and average pooling may sit between a gate and the next layer"
            )
        layers[name] = module

    if pending:
        raise ValueError(f"gate {pending[-1][0]!r} feeds no weighted layer, so it cannot be folded")
    return nn.Sequential(layers)


@torch.no_grad()
def _scale_inputs(layer: nn.Module, scale: torch.Tensor, gate_name: str) -> None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"cannot fold gate {gate_name!r} into a grouped convolution")
        layer.weight.mul_(scale.view(1, -1, 1, 1))
        return

    # A Linear after Flatten reads units * positions features in channel-major order.
    positions, remainder = divmod(layer.in_features, scale.numel())
    if remainder:
        raise ValueError(
            f"gate {gate_name!r} has {scale.numel()} units but the next layer has "
            f"{layer.in_features} inputs, which is not a multiple"
        )
    layer.weight.mul_(scale.repeat_interleave(positions).view(1, -1))
