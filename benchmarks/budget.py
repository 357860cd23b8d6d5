"""Prune a trained network to a compression target with a method's own ranking.

The cost of a candidate (parameters or FLOPs) is computed in closed form from
the layer widths. A binary search over how many units to remove then costs
microseconds per step, and the harness confirms the final size with fvcore. The
closed form matches fvcore for networks of Linear, Conv2d and BatchNorm layers
(fvcore counts pooling and activations as free), which a test checks.

How scores of different layers are compared is the ``ranking``:

- ``global``: one ranking of the raw scores over all layers;
- ``layer_normalized``: each layer's scores divided by their L2 norm first;
- ``uniform``: the same fraction removed in every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from benchmarks.structure import INPUT_SITE, find_sites

Ranking = Literal["global", "layer_normalized", "uniform"]
Metric = Literal["flops", "params"]
WEIGHTED = (nn.Linear, nn.Conv2d)

# How many removed units the refinement step tries to put back; beyond this,
# units are fine-grained enough (single weights) that it gains nothing.
_MAX_RESTORE = 5000
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class _Layer:
    in_site: str | None
    out_site: str | None
    in_units: int
    out_units: int
    per_pair_params: float  # weights per (input unit, output unit) pair
    per_pair_flops: float  # multiply-adds per pair, over all output positions
    per_out_params: float  # bias and BatchNorm parameters per output unit
    per_out_flops: float  # BatchNorm flops per output unit (2 per element in evaluation)


class StructuredCost:
    """Closed-form parameters and FLOPs of a flat Sequential as a function of site widths."""

    def __init__(self, model: nn.Sequential, input_shape: tuple[int, ...]) -> None:
        positions = _output_positions(model, input_shape, dict(model.named_children()))
        sites = {site.consumer: site.name for site in find_sites(model)}
        children = list(model.named_children())
        self.layers: list[_Layer] = []
        self.fixed_params = 0

        site_units = {site.name: site.units for site in find_sites(model)}
        for i, (name, module) in enumerate(children):
            if not isinstance(module, WEIGHTED):
                continue
            # The site this layer reads (None for a first convolution), and the one it produces.
            in_site = sites.get(name)
            out_site = name if name in site_units else None
            out_units = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            if in_site is not None:
                in_units = site_units[in_site]
            else:
                in_units = module.in_features if isinstance(module, nn.Linear) else module.in_channels

            pairs = in_units * out_units
            per_out_params = 1.0 if module.bias is not None else 0.0
            per_out_flops = 0.0
            following = children[i + 1][1] if i + 1 < len(children) else None
            if isinstance(following, BATCHNORM):
                per_out_params += 2.0
                per_out_flops += 2.0 * positions[children[i + 1][0]]
            layer = _Layer(
                in_site=in_site,
                out_site=out_site,
                in_units=in_units,
                out_units=out_units,
                per_pair_params=module.weight.numel() / pairs,
                per_pair_flops=module.weight.numel() * positions[name] / pairs,
                per_out_params=per_out_params,
                per_out_flops=per_out_flops,
            )
            self.layers.append(layer)

        counted = sum(l.per_pair_params * l.in_units * l.out_units + l.per_out_params * l.out_units for l in self.layers)
        self.fixed_params = sum(p.numel() for p in model.parameters()) - int(round(counted))

    def cost(self, metric: Metric, widths: dict[str, int]) -> float:
        """Return parameters or FLOPs with ``widths[site]`` units kept (missing sites stay whole)."""
        total = float(self.fixed_params) if metric == "params" else 0.0
        for layer in self.layers:
            n_in = widths.get(layer.in_site, layer.in_units) if layer.in_site else layer.in_units
            n_out = widths.get(layer.out_site, layer.out_units) if layer.out_site else layer.out_units
            if metric == "params":
                total += layer.per_pair_params * n_in * n_out + layer.per_out_params * n_out
            else:
                total += layer.per_pair_flops * n_in * n_out + layer.per_out_flops * n_out
        return total


@torch.no_grad()
def _output_positions(model: nn.Module, input_shape: tuple[int, ...], modules: dict[str, nn.Module]) -> dict[str, int]:
    """Return H * W of each named module's output (1 for vectors) for one input."""
    positions: dict[str, int] = {}

    def recorder(name: str):
        def record(module, args, output):
            positions[name] = int(math.prod(output.shape[2:])) if output.dim() > 2 else 1

        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return positions


@dataclass
class BudgetResult:
    """Keep masks for a target, or the reason it cannot be met."""

    keep: dict[str, torch.Tensor] | None
    achieved: float | None
    reason: str | None = None


def _normalize(scores: dict[str, torch.Tensor], ranking: Ranking) -> dict[str, torch.Tensor]:
    if ranking != "layer_normalized":
        return scores
    return {site: s / s.norm().clamp_min(1e-12) for site, s in scores.items()}


def _removal_order(scores: dict[str, torch.Tensor]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Return site names, and the (site id, unit index) of each removable unit, least important first.

    The most important unit of every site is never removable, so no layer is
    ever emptied.
    """
    names = list(scores)
    site_ids, unit_ids, values = [], [], []
    for sid, site in enumerate(names):
        flat = scores[site].reshape(-1).float()
        protected = int(flat.argmax())
        index = torch.arange(flat.numel())
        removable = index != protected
        site_ids.append(torch.full((int(removable.sum()),), sid))
        unit_ids.append(index[removable])
        values.append(flat[removable])
    values_all = torch.cat(values)
    # Stable sort keeps ties in site order, so the result is deterministic.
    order = torch.sort(values_all, stable=True).indices
    return names, torch.cat(site_ids)[order], torch.cat(unit_ids)[order]


def _masks_from_removed(scores: dict[str, torch.Tensor], names, site_ids, unit_ids, k: int) -> dict[str, torch.Tensor]:
    keep = {site: torch.ones(scores[site].numel(), dtype=torch.bool) for site in names}
    for sid, uid in zip(site_ids[:k].tolist(), unit_ids[:k].tolist()):
        keep[names[sid]][uid] = False
    return {site: keep[site].view(scores[site].shape) for site in names}


def search_keep(
    scores: dict[str, torch.Tensor],
    cost_of_removed: "callable",
    budget: float,
    ranking: Ranking,
) -> tuple[dict[str, torch.Tensor] | None, float]:
    """Return the masks that remove the fewest units with ``cost <= budget``, and their cost.

    ``cost_of_removed(removed)`` maps removed units per site to a cost; it must
    not increase when more units are removed. Returns ``(None, best_cost)``
    when even the most aggressive candidate stays above the budget.
    """
    names = list(scores)
    sizes = {site: scores[site].numel() for site in names}

    if ranking == "uniform":
        sorted_idx = {site: torch.sort(scores[site].reshape(-1).float(), stable=True).indices for site in names}

        def removed_at(rate: float) -> dict[str, int]:
            return {site: min(sizes[site] - 1, int(math.floor(rate * sizes[site]))) for site in names}

        if cost_of_removed(removed_at(1.0)) > budget:
            return None, cost_of_removed(removed_at(1.0))
        low, high = 0.0, 1.0
        for _ in range(60):
            middle = (low + high) / 2
            if cost_of_removed(removed_at(middle)) <= budget:
                high = middle
            else:
                low = middle
        removed = removed_at(high)
        keep = {}
        for site in names:
            mask = torch.ones(sizes[site], dtype=torch.bool)
            mask[sorted_idx[site][: removed[site]]] = False
            keep[site] = mask.view(scores[site].shape)

        # Per-layer rounding can land well below the budget on coarse layers;
        # put back each layer's best removed units while they still fit.
        restored = True
        while restored:
            restored = False
            for site in names:
                if removed[site] == 0:
                    continue
                removed[site] -= 1
                if cost_of_removed(removed) <= budget:
                    keep[site].view(-1)[sorted_idx[site][removed[site]]] = True
                    restored = True
                else:
                    removed[site] += 1
        return keep, cost_of_removed(removed)

    names, site_ids, unit_ids = _removal_order(_normalize(scores, ranking))
    # removed_by_site[k, s] is how many units of site s the first k removals take.
    one_hot = torch.nn.functional.one_hot(site_ids, num_classes=len(names)).to(torch.int64)
    cumulative = torch.cat([torch.zeros(1, len(names), dtype=torch.int64), one_hot.cumsum(0)])

    def cost_at(k: int) -> float:
        return cost_of_removed({site: int(cumulative[k, sid]) for sid, site in enumerate(names)})

    total = len(site_ids)
    if cost_at(total) > budget:
        return None, cost_at(total)
    low, high = -1, total  # invariant: cost_at(high) <= budget
    while high - low > 1:
        middle = (low + high) // 2
        if cost_at(middle) <= budget:
            high = middle
        else:
            low = middle
    k = max(high, 0)
    keep = _masks_from_removed(scores, names, site_ids, unit_ids, k)

    # Removing one more unit can jump far below the budget when units are
    # coarse (a convolution channel). Put back the most important removed
    # units that still fit, so the result lands just below the target.
    removed = {site: int(cumulative[k, sid]) for sid, site in enumerate(names)}
    for j in range(k - 1, max(k - _MAX_RESTORE, 0) - 1, -1):
        site = names[int(site_ids[j])]
        removed[site] -= 1
        if cost_of_removed(removed) <= budget:
            keep[site].view(-1)[int(unit_ids[j])] = True
        else:
            removed[site] += 1
    return keep, cost_of_removed(removed)


def structured_budget(
    scores: dict[str, torch.Tensor],
    plain_model: nn.Sequential,
    input_shape: tuple[int, ...],
    metric: Metric,
    target: float,
    dense_cost: float,
    ranking: Ranking,
) -> BudgetResult:
    """Find unit keep masks whose compact network costs at most ``target * dense_cost``."""
    counter = StructuredCost(plain_model, input_shape)
    sizes = {site: s.numel() for site, s in scores.items()}

    def cost_of_removed(removed: dict[str, int]) -> float:
        return counter.cost(metric, {site: sizes[site] - count for site, count in removed.items()})

    keep, cost = search_keep(scores, cost_of_removed, target * dense_cost, ranking)
    if keep is None:
        return BudgetResult(
            None,
            None,
            f"keeping one unit per layer still costs {cost / dense_cost:.4f} of the dense {metric}; "
            "a smaller target would remove a whole layer",
        )
    return BudgetResult(keep, cost / dense_cost)


def unstructured_budget(
    scores: dict[str, torch.Tensor],
    model: nn.Module,
    input_shape: tuple[int, ...],
    metric: Metric,
    target: float,
    dense_cost: float,
    ranking: Ranking,
) -> BudgetResult:
    """Find weight keep masks whose non-zero parameters or FLOPs are at most ``target * dense_cost``."""
    modules = dict(model.named_modules())
    weighted = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, WEIGHTED)}
    positions = _output_positions(model, input_shape, weighted)
    other_params = sum(p.numel() for p in model.parameters()) - sum(
        modules[name.rsplit(".", 1)[0]].weight.numel() for name in scores
    )
    sizes = {name: s.numel() for name, s in scores.items()}

    def cost_of_removed(removed: dict[str, int]) -> float:
        if metric == "params":
            return other_params + sum(sizes[n] - removed[n] for n in sizes)
        return sum((sizes[n] - removed[n]) * positions[n] for n in sizes)

    keep, cost = search_keep(scores, cost_of_removed, target * dense_cost, ranking)
    if keep is None:
        return BudgetResult(
            None,
            None,
            f"keeping one weight per layer still costs {cost / dense_cost:.4f} of the dense {metric}",
        )
    return BudgetResult(keep, cost / dense_cost)


__all__ = ["BudgetResult", "INPUT_SITE", "StructuredCost", "search_keep", "structured_budget", "unstructured_budget"]
