"""The information-bottleneck gate of VIBNet and its KL upper bound.

Dai, Zhu, Guo and Wipf, "Compressing Neural Networks using the Variational
Information Bottleneck", ICML 2018 (arXiv:1802.10399). Each gated unit
(neuron or channel) is multiplied by z = mu + sigma * eps, eps ~ N(0, 1). The
KL term of the bound is 0.5 * log(1 + mu^2 / sigma^2) per unit and per
spatial position.

Sign convention: this module stores ``log_alpha = log sigma^2 - log mu^2``
(the reference code's quantity). A unit is kept while ``log_alpha`` is below
the threshold, so a large ``log_alpha`` means a noisy, uninformative unit.
The paper's alpha is the inverse ratio, mu^2 / sigma^2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Keeps log(mu^2) finite when mu reaches exactly zero.
_EPS = 1e-8


class InformationBottleneck(nn.Module):
    """Multiplicative Gaussian gate over dimension 1 (features or channels).

    In training mode the input is multiplied by ``mu + sigma * eps`` with a
    new ``eps`` per sample and unit. In evaluation mode it is multiplied by
    ``mu`` where the unit is kept and by zero where it is pruned.

    Args:
        num_units: number of neurons (2-D input) or channels (4-D input).
        kl_factor: per-layer multiplier of this gate's KL term.
        threshold: a unit is kept while ``log_alpha < threshold``.
        init_mu: mean of the initial ``mu`` (drawn from N(init_mu, 0.01^2)).
        init_log_sigma2: initial ``log sigma^2`` of every unit.

    Example:
        >>> gate = InformationBottleneck(4).eval()
        >>> gate(torch.ones(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        num_units: int,
        kl_factor: float = 1.0,
        threshold: float = 0.0,
        init_mu: float = 1.0,
        init_log_sigma2: float = -9.0,
    ) -> None:
        super().__init__()
        if num_units < 1:
            raise ValueError(f"num_units must be at least 1, got {num_units}")

        self.num_units = num_units
        self.kl_factor = float(kl_factor)
        self.threshold = float(threshold)
        self.mu = nn.Parameter(torch.empty(num_units).normal_(init_mu, 0.01))
        self.log_sigma2 = nn.Parameter(torch.full((num_units,), float(init_log_sigma2)))

        # Positions per unit in the last input seen (H * W for feature maps).
        # The KL term counts every position, so a channel costs in proportion to its feature map.
        self.register_buffer("spatial_size", torch.tensor(1, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_units={self.num_units}, kl_factor={self.kl_factor}, threshold={self.threshold}"

    def _broadcast(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return values.view(values.shape[0], self.num_units, *([1] * (x.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_units:
            raise ValueError(
                f"InformationBottleneck expects {self.num_units} units in dimension 1, "
                f"got input of shape {tuple(x.shape)}"
            )
        self.spatial_size.fill_(int(math.prod(x.shape[2:])))

        if self.training:
            eps = torch.randn(x.shape[0], self.num_units, device=x.device, dtype=x.dtype)
            z = self.mu + torch.exp(0.5 * self.log_sigma2) * eps
            return x * self._broadcast(z, x)

        z = (self.mu * self.mask()).unsqueeze(0)
        return x * self._broadcast(z, x)

    def log_alpha(self) -> torch.Tensor:
        """Return ``log sigma^2 - log mu^2`` per unit; higher means less informative."""
        return self.log_sigma2 - torch.log(self.mu.pow(2) + _EPS)

    def mask(self) -> torch.Tensor:
        """Return the hard keep mask (1.0 kept, 0.0 pruned) at ``self.threshold``."""
        return (self.log_alpha() < self.threshold).to(self.mu.dtype)

    def kl(self) -> torch.Tensor:
        """Return the KL upper bound of this gate, scaled by spatial size and kl_factor.

        Equals ``kl_factor * spatial_size * 0.5 * sum(log(1 + mu^2 / sigma^2))``.
        ``log1p(exp(log mu^2 - log sigma^2))`` is the same quantity, written so
        that it stays finite for very small sigma.
        """
        log_snr = torch.log(self.mu.pow(2) + _EPS) - self.log_sigma2
        per_unit = 0.5 * nn.functional.softplus(log_snr)
        return self.kl_factor * self.spatial_size.to(per_unit.dtype) * per_unit.sum()

    def num_kept(self) -> int:
        """Return the number of units kept at the current threshold."""
        return int(self.mask().sum().item())
