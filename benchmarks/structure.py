"""Prunable sites of a Sequential network and their physical removal.

A site is a set of units that one method decision keeps or removes: the input
features of an MLP, or the output neurons or channels of a hidden weighted
layer. Removing a unit deletes its producer's output row (with the BatchNorm
entries after it) and its consumer's input columns; torch-pruning's
dependency graph finds every coupled tensor, including the Flatten between a
convolution and a Linear layer.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

INPUT_SITE = "input"
WEIGHTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Site:
    """One prunable set of units.

    Attributes:
        name: the producing layer's name, or ``"input"`` for input features.
        producer: the producing layer's name, None for input features.
        consumer: the name of the weighted layer that reads these units.
        units: number of units (features, neurons or channels).
        kind: ``"input features"``, ``"neurons"`` or ``"channels"``.
    """

    name: str
    producer: str | None
    consumer: str
    units: int
    kind: str


class FeatureSelect(nn.Module):
    """Gather the kept input features, so a compact MLP still takes the original input.

    Example:
        >>> FeatureSelect(torch.tensor([0, 2]))(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[1., 3.]])
    """

    def __init__(self, index: torch.Tensor, in_features: int | None = None) -> None:
        super().__init__()
        self.register_buffer("index", index.to(torch.long).clone())
        self.in_features = int(in_features if in_features is not None else index.max().item() + 1)

    def extra_repr(self) -> str:
        return f"kept={self.index.numel()}, in_features={self.in_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


def _weighted_children(model: nn.Sequential) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_children() if isinstance(m, WEIGHTED)]


def find_sites(model: nn.Sequential, include_input: bool = True) -> list[Site]:
    """Return the prunable sites of a flat Sequential, input features first.

    The classifier's outputs are never a site. Input features are a site only
    when the first weighted layer is ``nn.Linear`` (an MLP).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"find_sites needs a flat nn.Sequential, got {type(model).__name__}")
    weighted = _weighted_children(model)
    if len(weighted) < 2:
        raise ValueError("a prunable model needs at least two weighted layers")

    sites = []
    first_name, first = weighted[0]
    if include_input and isinstance(first, nn.Linear):
        sites.append(Site(INPUT_SITE, None, first_name, first.in_features, "input features"))
    for (name, layer), (next_name, _) in zip(weighted[:-1], weighted[1:]):
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        kind = "neurons" if isinstance(layer, nn.Linear) else "channels"
        sites.append(Site(name, name, next_name, units, kind))
    return sites


def widths(model: nn.Sequential) -> dict[str, int]:
    """Return the current number of units at each site (input features included)."""
    result = {}
    for name, module in model.named_children():
        if isinstance(module, FeatureSelect):
            result[INPUT_SITE] = module.index.numel()
    for site in find_sites(model):
        if site.name == INPUT_SITE and INPUT_SITE in result:
            continue
        result[site.name] = site.units
    return result


def _check_keep(sites: list[Site], keep: dict[str, torch.Tensor]) -> None:
    for site in sites:
        if site.name not in keep:
            continue
        mask = keep[site.name]
        if mask.numel() != site.units:
            raise ValueError(f"keep mask of site {site.name!r} has {mask.numel()} entries, expected {site.units}")
        if not bool(mask.any()):
            raise ValueError(f"keep mask of site {site.name!r} removes every unit, which would cut the network")


def remove_units(model: nn.Sequential, keep: dict[str, torch.Tensor], example_input: torch.Tensor) -> nn.Sequential:
    """Return a physically smaller copy of ``model`` without the units where ``keep`` is False.

    Sites missing from ``keep`` stay whole. Pruned input features are
    gathered by a ``FeatureSelect`` before the first layer, so the compact
    model takes the original input. ``model`` must contain no gates (fold
    them first), and the result equals ``mask_units(model, keep)``.
    """
    sites = find_sites(model)
    _check_keep(sites, keep)
    compact = copy.deepcopy(model).eval()
    modules = dict(compact.named_children())

    # torch-pruning traces through autograd, so gradients must be on here.
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(compact, example_inputs=example_input, verbose=False)
    for site in sites:
        if site.producer is None or site.name not in keep:
            continue
        removed = (~keep[site.name].bool()).nonzero().flatten().tolist()
        if not removed:
            continue
        layer = modules[site.producer]
        prune_fn = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
        graph.get_pruning_group(layer, prune_fn, idxs=removed).prune()

    input_pruned = INPUT_SITE in keep and not bool(keep[INPUT_SITE].all())
    if input_pruned and any(site.name == INPUT_SITE for site in sites):
        compact = _select_inputs(compact, keep[INPUT_SITE].bool())
    return compact


def _select_inputs(model: nn.Sequential, keep: torch.Tensor) -> nn.Sequential:
    first_name, first = _weighted_children(model)[0]
    removed = (~keep).nonzero().flatten().tolist()
    if removed:
        tp.prune_linear_in_channels(first, idxs=removed)

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in model.named_children():
        if name == first_name:
            layers["select"] = FeatureSelect(keep.nonzero().flatten(), in_features=keep.numel())
        layers[name] = module
    return nn.Sequential(layers)


class _UnitMask:
    """Forward hook that multiplies a tensor's dimension 1 by a keep mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, module: nn.Module, args, output=None):
        tensor = args[0] if output is None else output
        shape = [1, -1] + [1] * (tensor.dim() - 2)
        scaled = tensor * self.mask.to(tensor.dtype).view(shape)
        return (scaled,) if output is None else scaled


def mask_units(model: nn.Sequential, keep: dict[str, torch.Tensor]) -> nn.Sequential:
    """Return a copy of ``model`` whose pruned units output zero; the reference for ``remove_units``.

    Each hidden site is masked where its consumer reads it (after the
    activation and pooling), and input features at the first layer.
    """
    masked = copy.deepcopy(model)
    modules = dict(masked.named_children())
    flatten_before: dict[str, str] = {}
    previous_flatten = None
    for name, module in masked.named_children():
        if isinstance(module, nn.Flatten):
            previous_flatten = name
        elif isinstance(module, WEIGHTED):
            if previous_flatten is not None:
                flatten_before[name] = previous_flatten
            previous_flatten = None

    for site in find_sites(model):
        if site.name not in keep:
            continue
        mask = keep[site.name].bool()
        target = site.consumer
        # Hidden units feeding a Linear through a Flatten are masked before the Flatten.
        if site.producer is not None and site.consumer in flatten_before:
            target = flatten_before[site.consumer]
        modules[target].register_forward_pre_hook(_UnitMask(mask))
    return masked


# Layers the surgery handles at the top level of a Sequential, with the
# reason: each maps unit i of its input to unit i of its output, or is a
# weighted layer whose units torch-pruning removes.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
               nn.Dropout, nn.Dropout2d)
SUPPORTED_LAYERS = (*WEIGHTED, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten,
                    FeatureSelect, *ELEMENTWISE)
# Tensor methods and functions that change which position of a tensor contains which unit.
RESHAPES = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "squeeze", "unsqueeze",
            "expand", "repeat", "cat", "stack", "split", "chunk", "narrow", "roll", "gather", "index_select"}


class UnsupportedModelError(ValueError):
    """A network the structural surgery cannot prune; ``module`` names the offending layer."""

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"{module}: {reason}")
        self.module = module
        self.reason = reason


def check_prunable(model: nn.Module, example_input: torch.Tensor) -> None:
    """Raise ``UnsupportedModelError`` unless ``remove_units`` can prune ``model`` correctly.

    The model must be a flat ``nn.Sequential`` of ``SUPPORTED_LAYERS`` with
    at least two weighted layers. The layers must be of exactly those types,
    convolutions ungrouped, and a Flatten must keep the batch dimension
    only. Removing one unit at every site must then give the same outputs as
    masking it. Run the check before training, because a custom module (a
    reshape such as ``x.view`` in its forward, or layers nested inside it)
    would give a wrong compact network.

    Example:
        >>> check_prunable(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.zeros(1, 4))
    """
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        raise UnsupportedModelError(
            f"the model ({type(model).__name__})",
            "the structural surgery needs a flat nn.Sequential of supported layers; "
            "build the network as nn.Sequential(OrderedDict(name=layer, ...))",
        )
    for name, module in model.named_children():
        reason = _unsupported_reason(module)
        if reason is not None:
            raise UnsupportedModelError(f"layer {name!r} ({type(module).__name__})", reason)
    try:
        sites = find_sites(model)
    except ValueError as error:
        raise UnsupportedModelError(f"the model ({type(model).__name__})", str(error)) from None
    _check_removal_matches_masking(model, sites, example_input)


def _unsupported_reason(module: nn.Module) -> str | None:
    """Return why ``module`` cannot be a layer of a prunable Sequential, or None when it can."""
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return "a nested container; put its layers directly into the top-level nn.Sequential"
    supported = next((base for base in SUPPORTED_LAYERS if isinstance(module, base)), None)
    if supported is None:
        return _custom_module_reason(module)
    if type(module).forward is not supported.forward:
        return (f"a subclass of {supported.__name__} with its own forward, which the surgery cannot see into; "
                f"use {supported.__name__} itself")
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return f"a grouped convolution (groups={module.groups}) couples its input and output channels"
    if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) != (1, -1):
        return f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}); only Flatten(1, -1) keeps units apart"
    return None


def _custom_module_reason(module: nn.Module) -> str:
    kind = type(module).__name__
    supported = ", ".join(layer.__name__ for layer in SUPPORTED_LAYERS)
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as error:  # fx raises many types for code it cannot trace
        return (f"custom module {kind} whose forward cannot be traced ({type(error).__name__}), so the surgery "
                f"cannot see how it maps units; use only these layers: {supported}")
    calls = sorted({getattr(node.target, "__name__", str(node.target)) for node in graph.nodes
                    if node.op in ("call_method", "call_function")
                    and getattr(node.target, "__name__", node.target) in RESHAPES})
    if calls:
        return (f"custom module {kind} calls {', '.join(calls)} in its forward, a reshape that the structural "
                f"surgery cannot follow; use nn.Flatten and the supported layers instead")
    nested = [name for name, child in module.named_modules() if isinstance(child, WEIGHTED)]
    if nested:
        return (f"custom module {kind} holds weighted layers ({', '.join(nested)}) that the surgery cannot reach; "
                f"put them directly into the top-level nn.Sequential")
    return f"custom module {kind} is not a layer the structural surgery supports; use only these layers: {supported}"


@torch.no_grad()
def _check_removal_matches_masking(model: nn.Sequential, sites: list[Site], example_input: torch.Tensor) -> None:
    """Remove the last unit of every site and compare with masking it; raise on any difference."""
    keep = {}
    for site in sites:
        mask = torch.ones(site.units, dtype=torch.bool)
        mask[-1] = False
        keep[site.name] = mask
    reference = copy.deepcopy(model).eval()
    inputs = torch.randn(1, *example_input.shape[1:], generator=torch.Generator().manual_seed(0))
    try:
        compact = remove_units(reference, keep, example_input).eval()
        expected = mask_units(reference, keep).eval()(inputs)
        actual = compact(inputs)
    except Exception as error:  # torch-pruning and a failed forward raise many types
        raise UnsupportedModelError(
            f"the model ({type(model).__name__})",
            f"removing one unit per site failed with {type(error).__name__}: {error}",
        ) from None
    scale = float(expected.abs().max()) or 1.0
    if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale):
        raise UnsupportedModelError(
            f"the model ({type(model).__name__})",
            "removing one unit per site gives other outputs than masking it, so the compact network would be wrong; "
            "check for layers that couple units",
        )
