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
    """Input shape and class count that a model takes from its dataset."""

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


# VGG-16's thirteen 3x3 convolutions; "M" is a 2x2 max pooling that halves the feature map.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


@MODELS.register("vgg16")
def vgg_16(input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> nn.Sequential:
    """Return VGG-16 with BatchNorm for 32x32 images (14,990,922 parameters on CIFAR-10).

    Thirteen 3x3 convolutions (padding 1, with bias) in five stages of
    64, 64 | 128, 128 | 256 x 3 | 512 x 3 | 512 x 3 channels, each convolution
    followed by BatchNorm and ReLU, and each stage by 2x2 max pooling, so a
    32x32 input leaves the last stage as 512 x 1 x 1. The classifier is
    Linear(512, 512), ReLU, Linear(512, num_classes): the form that VIBNet's
    reference code trains on CIFAR (its VGG-16 "with one fewer FC" layer),
    not the 4096-wide ImageNet classifier.

    Layers are named ``conv1`` ... ``conv13`` with ``bn1`` ... ``bn13`` and
    ``relu1`` ... ``relu13``, pools ``pool1`` ... ``pool5``, then ``flatten``,
    ``fc1``, ``relu14`` and ``fc2``. Convolutions start from He (fan-out)
    normal weights and zero bias; BatchNorm and Linear layers keep PyTorch's
    defaults.

    Raises:
        ValueError: when the image side is not 32, since the classifier
            expects the 1x1 map that five poolings leave of a 32x32 input.
    """
    channels, height, width = input_shape
    if (height, width) != (32, 32):
        raise ValueError(f"vgg16 takes 32x32 images (CIFAR), got {height}x{width}; use a 32x32 dataset such as cifar10")

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels, index = channels, 0
    for stage, widths in enumerate(VGG16_STAGES, start=1):
        for out_channels in widths:
            index += 1
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers[f"conv{index}"] = conv
            layers[f"bn{index}"] = nn.BatchNorm2d(out_channels)
            layers[f"relu{index}"] = nn.ReLU()
            in_channels = out_channels
        layers[f"pool{stage}"] = nn.MaxPool2d(2)

    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(in_channels, 512)
    layers[f"relu{index + 1}"] = nn.ReLU()
    layers["fc2"] = nn.Linear(512, num_classes)
    return nn.Sequential(layers)


def build_model(name: str, spec: ModelSpec) -> nn.Sequential:
    """Build the registered model ``name`` for inputs and classes of ``spec``."""
    return MODELS.get(name)(input_shape=spec.input_shape, num_classes=spec.num_classes)
