"""A plug-in that registers a model and then fails, so the loader must report it and undo the registration."""

from __future__ import annotations

from torch import nn

from benchmarks.registry import MODELS


@MODELS.register("half_registered")
def half_registered(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    """Never usable: the module fails below."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


raise RuntimeError("the toy plug-in's broken module fails on purpose")
