"""VIBNet: information-bottleneck gates on every hidden layer and the input features."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

import vib
from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS
from benchmarks.structure import find_sites, remove_units


class VIBNetParams(MethodParams):
    gamma: float = Field(1e-4, gt=0, description="multiplier of the summed KL bound in the loss")
    threshold: float = Field(0.0, description="a unit is kept while log_alpha = log sigma^2 - log mu^2 is below this")
    gate_input: bool = Field(True, description="gate (and so prune) the input features of an MLP")
    init_log_sigma2: float = Field(-9.0, description="initial log sigma^2 of every gate")
    gate_lr_factor: float = Field(
        1.0, gt=0, description="learning rate of the gates' mu and log sigma^2 relative to the weights'"
    )
    kl_factors: dict[str, float] = Field(
        default_factory=dict, description="per-layer KL multiplier keyed by layer name; missing layers get 1"
    )


@METHODS.register("vibnet")
class VIBNet(PruningMethod):
    """Dai et al. 2018: prune units whose gate carries no information (log alpha above the threshold)."""

    name = "vibnet"
    prunes = "input features, neurons, channels"
    strength = "gamma"
    Params = VIBNetParams

    def prepare(self, model: nn.Sequential) -> nn.Sequential:
        sites = [site.name for site in find_sites(model, include_input=self.params.gate_input)]
        unknown = sorted(set(self.params.kl_factors) - set(sites))
        if unknown:
            raise ValueError(f"kl_factors names unknown layers {unknown}; valid layer names: {', '.join(sites)}")
        return vib.insert_gates(
            model,
            gate_input=self.params.gate_input,
            kl_factors=self.params.kl_factors,
            threshold=self.params.threshold,
            init_log_sigma2=self.params.init_log_sigma2,
        )

    def param_groups(self, model: nn.Module) -> list[dict]:
        # VIBNet's reference implementation has a separate learning rate for the gates (ib_lr).
        # At 1e-3 Adam moves log sigma^2 about 1e-3 per step, too slow to leave -9 in a short budget.
        gate_params = {id(p) for gate in vib.gates(model).values() for p in gate.parameters()}
        weights = [p for p in model.parameters() if id(p) not in gate_params]
        gate_list = [p for p in model.parameters() if id(p) in gate_params]
        return [
            {"params": weights, "lr_factor": 1.0},
            {"params": gate_list, "lr_factor": self.params.gate_lr_factor},
        ]

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.params.gamma * vib.kl_total(model)

    def plain(self, model: nn.Module) -> nn.Sequential:
        return vib.fold_gates(model)

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {site: -value for site, value in vib.log_alphas(model).items()}

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return vib.masks(model)

    def apply(self, model: nn.Module, keep: dict[str, torch.Tensor], example_input: torch.Tensor) -> nn.Module:
        # Fold with the requested masks, not the gates' own: a budget target may
        # keep units that the log-alpha threshold would prune.
        full = {site: keep.get(site, torch.ones_like(mask)) for site, mask in vib.masks(model).items()}
        return remove_units(vib.fold_gates(model, keep=full), keep, example_input)
