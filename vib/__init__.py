"""VIBNet neuron and channel pruning as a library that depends on torch only.

Example:
    >>> from torch import nn
    >>> import vib
    >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    >>> gated = vib.insert_gates(mlp)
    >>> sorted(vib.gates(gated))
    ['1', 'input']
"""

from vib.gate import InformationBottleneck
from vib.sequential import INPUT_SITE, fold_gates, gates, insert_gates, kl_total, log_alphas, masks

__all__ = [
    "INPUT_SITE",
    "InformationBottleneck",
    "fold_gates",
    "gates",
    "insert_gates",
    "kl_total",
    "log_alphas",
    "masks",
]
