"""The protocol every pruning method follows, so the harness never branches on a name.

A method turns a dense network into a pruned one in four steps, which the
harness calls in order. It ``prepare``s the model (inserts gates or
BatchNorm), adds ``penalty`` to the loss during the sparsity phase (with
``on_epoch_end`` for schedules), ranks units by ``scores``, and ``apply``s
keep masks. The masks are the method's own (``natural_keep``) or the ones
the harness chose for a budget target.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from benchmarks.structure import find_sites, remove_units


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PruningMethod(abc.ABC):
    """One pruning method behind the harness's protocol.

    Class attributes:
        name: registry name.
        structured: True when units (features, neurons, channels) are removed,
            False when single weights are masked.
        prunes: what the method may remove, as shown in tables.
        strength: the name of the parameter that sets the sparsity strength,
            or None.
        Params: the pydantic model of the parameters.
    """

    name: ClassVar[str]
    structured: ClassVar[bool] = True
    prunes: ClassVar[str] = "nothing"
    strength: ClassVar[str | None] = None
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: dict | None = None) -> None:
        self.params = self.Params(**(params or {}))

    def prepare(self, model: nn.Sequential) -> nn.Sequential:
        """Return the network the sparsity phase trains (a copy when it changes)."""
        return model

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """Return the sparsity term added to the mean cross-entropy of a batch."""
        return torch.zeros((), device=next(model.parameters()).device)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Return optimizer parameter groups; ``lr_factor`` scales the suite's learning rate."""
        return [{"params": list(model.parameters()), "lr_factor": 1.0}]

    def on_epoch_end(self, model: nn.Module, epoch: int, num_epochs: int) -> None:
        """Update a schedule after sparsity epoch ``epoch`` (0-based) of ``num_epochs``."""

    def plain(self, model: nn.Module) -> nn.Sequential:
        """Return the network without training-only modules, equal in evaluation mode."""
        return model

    @abc.abstractmethod
    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Return importance per unit (per site) or per weight (per parameter); higher is kept first."""

    @abc.abstractmethod
    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Return boolean keep masks at the method's own operating point."""

    def apply(self, model: nn.Module, keep: dict[str, torch.Tensor], example_input: torch.Tensor) -> nn.Module:
        """Return the pruned network for ``keep``: a compact network for structured methods."""
        return remove_units(self.plain(model), keep, example_input)

    def finalize(self, model: nn.Module) -> nn.Module:
        """Return the network to measure after fine-tuning (masks made permanent, for example)."""
        return model

    def sites(self, model: nn.Module) -> list[str]:
        """Return the names of the sites this method prunes in ``model``."""
        return [site.name for site in find_sites(self.plain(model))]
