"""A small MLP, registered by the entry point ``toy_mlp = "vibbench_toy_plugin.models:toy_mlp"``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def toy_mlp(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    """Return an MLP with one hidden layer of 32 units (the test plug-in's model)."""
    channels, height, width = input_shape
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(channels * height * width, 32),
            relu1=nn.ReLU(),
            fc2=nn.Linear(32, num_classes),
        )
    )
