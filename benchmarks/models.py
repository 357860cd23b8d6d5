"""Reference networks, each a flat ``nn.Sequential`` with named layers.

A flat Sequential lets every method find its sites (input features, and the
output of each hidden weighted layer) the same way, and lets the structural
surgery trace the network without special cases.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from benchmarks.registry import MODELS


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs from its dataset."""

    input_shape: tuple[int, int, int]
    num_classes: int


@MODELS.register("lenet300100")
def lenet_300_100(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    """Return LeNet-300-100: an MLP 784-300-100-10 with ReLU (266,610 parameters on MNIST)."""
    in_features = input_shape[0] * input_shape[1] * input_shape[2]
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, 300),
            relu1=nn.ReLU(),
            fc2=nn.Linear(300, 100),
            relu2=nn.ReLU(),
            fc3=nn.Linear(100, num_classes),
        )
    )


@MODELS.register("lenet5")
def lenet_5(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    """Return LeNet-5 in its Caffe form 20-50-800-500 (431,080 parameters on MNIST).

    Two 5x5 convolutions (20 and 50 channels), each followed by ReLU and 2x2
    max pooling, then a 500-unit hidden layer and the classifier.
    """
    channels, height, width = input_shape
    # Two valid 5x5 convolutions and two 2x2 poolings: 28 -> 24 -> 12 -> 8 -> 4.
    out_height = ((height - 4) // 2 - 4) // 2
    out_width = ((width - 4) // 2 - 4) // 2
    flat = 50 * out_height * out_width
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(channels, 20, kernel_size=5),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(20, 50, kernel_size=5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(flat, 500),
            relu3=nn.ReLU(),
            fc2=nn.Linear(500, num_classes),
        )
    )


def build_model(name: str, spec: ModelSpec) -> nn.Sequential:
    """Build the registered model ``name`` for inputs and classes of ``spec``."""
    return MODELS.get(name)(input_shape=spec.input_shape, num_classes=spec.num_classes)
