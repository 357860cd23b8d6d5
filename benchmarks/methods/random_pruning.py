"""Random pruning: units removed uniformly at random, the control for every importance criterion.

This adapter uses only the public plug-in interface (``PruningMethod`` and
``METHODS.register``) and reaches the harness through vibbench's own entry
point in the ``vibbench.methods`` group, as a user's method would.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from baselines.random_pruning import random_keep, random_unit_scores
from benchmarks.methods.base import MethodParams, PruningMethod
from benchmarks.registry import METHODS
from benchmarks.structure import find_sites

# Name of the buffer that carries the seed of the unit scores through checkpoints.
SEED_BUFFER = "unit_score_seed"


class RandomPruningParams(MethodParams):
    fraction: float = Field(
        0.5, ge=0, lt=1, description="fraction of every site's units removed at the natural operating point"
    )


@METHODS.register("random")
class RandomPruning(PruningMethod):
    """Score every unit with an independent uniform random number, so the lowest-scored units are a random pick.

    The sparsity phase trains without a penalty. At a budget target the
    harness removes the lowest-scored units, so with ``ranking: global`` the
    removed units are uniformly random over the whole network. The natural
    operating point removes ``fraction`` of every site's units.

    NOTE: the seed of the scores is drawn from torch's default generator in
    ``prepare``; the harness seeds it with the run's seed just before, so
    every seed of a suite picks other units and a rerun picks the same ones.
    """

    name = "random"
    prunes = "input features, neurons, channels"
    strength = None
    Params = RandomPruningParams

    def prepare(self, model: nn.Sequential) -> nn.Sequential:
        prepared = copy.deepcopy(model)
        seed = torch.randint(0, 2**62, (), dtype=torch.int64)
        prepared.register_buffer(SEED_BUFFER, seed)
        return prepared

    def plain(self, model: nn.Module) -> nn.Sequential:
        if not hasattr(model, SEED_BUFFER):
            return model
        plain = copy.deepcopy(model)
        delattr(plain, SEED_BUFFER)
        return plain

    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        seed = getattr(model, SEED_BUFFER, None)
        if seed is None:
            raise ValueError(f"the model has no {SEED_BUFFER!r} buffer; pass it through RandomPruning.prepare first")
        units = {site.name: site.units for site in find_sites(self.plain(model))}
        return random_unit_scores(units, int(seed))

    def natural_keep(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return random_keep(self.scores(model), self.params.fraction)
