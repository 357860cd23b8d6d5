"""Group lasso (L1 group sparsity) over the units of a network.

A unit's group is either its outgoing weights (the input columns of the next
layer, the form of Scardapane, Comminiello, Hussain and Uncini, "Group Sparse
Regularization for Deep Neural Networks", arXiv:1607.00485), which also lets
input features be pruned, or its incoming weights and bias. The penalty is
``lambda * sum of the groups' L2 norms``.
"""

from __future__ import annotations

import torch
from torch import nn


def outgoing_group_norms(consumer: nn.Module, units: int) -> torch.Tensor:
    """Return the L2 norm of each unit's outgoing weights in ``consumer``.

    ``consumer`` is the layer fed by the units: a Conv2d whose input channels
    are the units, or a Linear whose ``in_features`` are the units times a
    number of positions (a Flatten in between, channel-major).

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> outgoing_group_norms(layer, 2)
        tensor([3., 4.], grad_fn=<LinalgVectorNormBackward0>)
    """
    weight = consumer.weight
    if isinstance(consumer, nn.Conv2d):
        grouped = weight.transpose(0, 1).reshape(units, -1)
    elif isinstance(consumer, nn.Linear):
        if consumer.in_features % units:
            raise ValueError(
                f"Linear layer has {consumer.in_features} inputs, not a multiple of {units} units"
            )
        positions = consumer.in_features // units
        grouped = weight.view(weight.shape[0], units, positions).transpose(0, 1).reshape(units, -1)
    else:
        raise TypeError(f"outgoing groups need a Linear or Conv2d consumer, got {type(consumer).__name__}")
    return torch.linalg.vector_norm(grouped, dim=1)


def incoming_group_norms(producer: nn.Module, include_bias: bool = True) -> torch.Tensor:
    """Return the L2 norm of each output unit's incoming weights (and bias)."""
    if not isinstance(producer, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"incoming groups need a Linear or Conv2d producer, got {type(producer).__name__}")
    grouped = producer.weight.reshape(producer.weight.shape[0], -1)
    if include_bias and producer.bias is not None:
        grouped = torch.cat([grouped, producer.bias.unsqueeze(1)], dim=1)
    return torch.linalg.vector_norm(grouped, dim=1)


def group_lasso_penalty(norms: list[torch.Tensor], strength: float) -> torch.Tensor:
    """Return ``strength * sum of all group norms``.

    Example:
        >>> group_lasso_penalty([torch.tensor([3.0, 4.0]), torch.tensor([1.0])], 0.5)
        tensor(4.)
    """
    if not norms:
        return torch.zeros(())
    return strength * torch.cat([n.reshape(-1) for n in norms]).sum()
