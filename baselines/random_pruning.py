"""Random pruning: every unit gets an independent uniform random score.

The control that any importance criterion has to beat. Removing the
lowest-scored units removes units uniformly at random, whatever the target.
``random_keep`` removes the same fraction of every site at random. Scores
come from a seeded ``torch.Generator``, so the same seed picks the same units.
"""

from __future__ import annotations

import torch


def random_unit_scores(units: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """Return a score in [0, 1) for each unit of each site, drawn in the order of ``units``.

    Args:
        units: number of units per site name, in network order.
        seed: seed of the generator; the same seed and ``units`` give the same scores.

    Example:
        >>> scores = random_unit_scores({"fc1": 3, "fc2": 2}, seed=0)
        >>> [tuple(s.shape) for s in scores.values()]
        [(3,), (2,)]
        >>> torch.equal(scores["fc1"], random_unit_scores({"fc1": 3, "fc2": 2}, seed=0)["fc1"])
        True
    """
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for site, count in units.items():
        if count < 1:
            raise ValueError(f"site {site!r} has {count} units; a site needs at least one")
        scores[site] = torch.rand(count, generator=generator)
    return scores


def random_keep(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Return keep masks that remove ``round(fraction * units)`` lowest-scored units of every site.

    At least one unit of each site stays, so no layer is cut off.

    Example:
        >>> random_keep({"fc1": torch.tensor([0.9, 0.1, 0.5, 0.3])}, 0.5)["fc1"]
        tensor([ True, False,  True, False])
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction {fraction} is outside [0, 1); give the share of units to remove, such as 0.5")
    keep = {}
    for site, score in scores.items():
        removed = min(int(round(fraction * score.numel())), score.numel() - 1)
        mask = torch.ones(score.numel(), dtype=torch.bool)
        mask[torch.argsort(score)[:removed]] = False
        keep[site] = mask
    return keep
