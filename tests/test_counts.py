"""Parameter, FLOP and activation counts of the reference networks, derived by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from baselines import insert_batchnorm
from benchmarks.budget import StructuredCost
from benchmarks.measure import activation_bytes, count_nonzero_params, count_params, flops_fvcore, flops_nonzero
from benchmarks.models import lenet_300_100, lenet_5
from benchmarks.structure import find_sites, remove_units

MNIST_SHAPE = (1, 28, 28)

# LeNet-300-100 weights: fc1 784*300 = 235,200, fc2 300*100 = 30,000 and
# fc3 100*10 = 1,000. Its biases add 300 + 100 + 10 = 410 parameters.
LENET300_WEIGHTS = 235_200 + 30_000 + 1_000
LENET300_PARAMS = LENET300_WEIGHTS + 410

# LeNet-5 multiply-adds for one 1x28x28 input:
#   conv1: 20 channels * 25 (1x5x5 kernel) * 24*24 positions = 288,000
#   conv2: 50 channels * 20*25 (20x5x5 kernel) * 8*8 positions = 1,600,000
#   fc1: 800 * 500 = 400,000
#   fc2: 500 * 10 = 5,000
LENET5_FLOPS = 288_000 + 1_600_000 + 400_000 + 5_000
# Parameters: conv1 20*25 + 20, conv2 50*500 + 50, fc1 800*500 + 500, fc2 500*10 + 10.
LENET5_PARAMS = (500 + 20) + (25_000 + 50) + (400_000 + 500) + (5_000 + 10)

# BatchNorm follows conv1 (20 channels of 24x24), conv2 (50 channels of 8x8)
# and fc1 (500 features). fvcore counts 2 flops per element in evaluation mode.
# Each BatchNorm adds 2 parameters (scale and shift) per channel.
LENET5_BN_FLOPS = LENET5_FLOPS + 2 * (20 * 24 * 24 + 50 * 8 * 8 + 500)
LENET5_BN_PARAMS = LENET5_PARAMS + 2 * (20 + 50 + 500)


def random_keep(model: nn.Sequential, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Return a random keep mask for every site of ``model``, each keeping at least one unit."""
    keep = {}
    for site in find_sites(model):
        mask = torch.rand(site.units, generator=generator) < torch.rand(1, generator=generator)
        mask[torch.randint(site.units, (1,), generator=generator)] = True
        keep[site.name] = mask
    return keep


def test_lenet300_params():
    assert count_params(lenet_300_100()) == 266_610
    assert LENET300_PARAMS == 266_610


def test_lenet300_flops_fvcore():
    flops, unsupported = flops_fvcore(lenet_300_100(), MNIST_SHAPE)

    assert flops == 266_200
    assert flops == LENET300_WEIGHTS
    assert unsupported == {}


def test_lenet5_params():
    assert count_params(lenet_5()) == 431_080
    assert LENET5_PARAMS == 431_080


def test_lenet5_flops_fvcore():
    flops, _ = flops_fvcore(lenet_5(), MNIST_SHAPE)

    assert flops == 2_293_000
    assert flops == LENET5_FLOPS


def test_lenet5_maxpool_unsupported():
    _, unsupported = flops_fvcore(lenet_5(), MNIST_SHAPE)

    # Two max-pooling layers, each counted as free.
    assert unsupported == {"aten::max_pool2d": 2}


def test_batchnorm_flops_in_eval():
    model = insert_batchnorm(lenet_5()).train()

    flops, _ = flops_fvcore(model, MNIST_SHAPE)

    assert flops == LENET5_BN_FLOPS
    assert flops == 2_323_440
    # flops_fvcore switches to evaluation mode only while it counts.
    assert model.training


def test_batchnorm_params():
    assert count_params(insert_batchnorm(lenet_5())) == LENET5_BN_PARAMS


@pytest.mark.parametrize(
    "build",
    [lenet_300_100, lenet_5, lambda: insert_batchnorm(lenet_5()), lambda: insert_batchnorm(lenet_300_100())],
    ids=["lenet300", "lenet5", "lenet5_bn", "lenet300_bn"],
)
def test_structured_cost_matches(build, generator):
    torch.manual_seed(0)
    model = build().eval()
    counter = StructuredCost(model, MNIST_SHAPE)
    example = torch.zeros(1, *MNIST_SHAPE)

    full = {site.name: site.units for site in find_sites(model)}
    assert counter.cost("flops", full) == flops_fvcore(model, MNIST_SHAPE)[0]
    assert counter.cost("params", full) == count_params(model)

    for _ in range(3):
        keep = random_keep(model, generator)
        compact = remove_units(model, keep, example)
        widths = {site: int(mask.sum()) for site, mask in keep.items()}

        assert counter.cost("flops", widths) == flops_fvcore(compact, MNIST_SHAPE)[0]
        assert counter.cost("params", widths) == count_params(compact)


def test_activation_bytes_lenet300():
    # Leaf outputs for one input: flatten 784, fc1 300, relu1 300, fc2 100,
    # relu2 100, fc3 10 float32 values of 4 bytes each.
    expected = (784 + 300 + 300 + 100 + 100 + 10) * 4

    assert activation_bytes(lenet_300_100(), MNIST_SHAPE) == expected
    assert expected == 6_376


def test_activation_bytes_lenet5():
    # conv1 and relu1 20x24x24, pool1 20x12x12, conv2 and relu2 50x8x8,
    # pool2 and flatten 50x4x4, fc1 and relu3 500, fc2 10. Each value takes 4 bytes.
    values = 2 * 20 * 24 * 24 + 20 * 12 * 12 + 2 * 50 * 8 * 8 + 2 * 800 + 2 * 500 + 10

    assert activation_bytes(lenet_5(), MNIST_SHAPE) == values * 4


def test_nonzero_counts_dense():
    model = lenet_300_100()

    assert count_nonzero_params(model) == 266_610
    assert flops_nonzero(model, MNIST_SHAPE) == 266_200


def test_nonzero_counts_masked_mlp():
    torch.manual_seed(0)
    model = lenet_300_100()
    prune.l1_unstructured(model.fc1, "weight", amount=117_600)
    prune.l1_unstructured(model.fc2, "weight", amount=27_000)

    # Half of fc1 (235,200 weights) and 90 % of fc2 (30,000) are masked.
    assert count_nonzero_params(model) == 266_610 - 117_600 - 27_000
    assert flops_nonzero(model, MNIST_SHAPE) == 266_200 - 117_600 - 27_000
    # Masks keep the dense tensors.
    assert count_params(model) == 266_610


def test_nonzero_counts_masked_conv():
    torch.manual_seed(0)
    model = lenet_5()
    prune.l1_unstructured(model.conv2, "weight", amount=12_500)

    # Half of conv2's 25,000 weights go, and with them half of its 1,600,000 multiply-adds.
    assert count_nonzero_params(model) == 431_080 - 12_500
    assert flops_nonzero(model, MNIST_SHAPE) == 2_293_000 - 800_000


def test_nonzero_params_fresh_mask():
    torch.manual_seed(0)
    model = lenet_300_100()
    prune.l1_unstructured(model.fc3, "weight", amount=400)

    # Changing the mask without a forward pass leaves ``fc3.weight`` stale,
    # so the count must read weight_orig * weight_mask.
    with torch.no_grad():
        model.fc3.weight_mask.zero_()

    assert count_nonzero_params(model) == 266_610 - 1_000


def test_nonzero_params_bias_mask():
    # Fails until count_nonzero_params reads bias masks as well as weight masks
    # (benchmarks/measure.py).
    torch.manual_seed(0)
    model = lenet_300_100()
    prune.l1_unstructured(model.fc1, "bias", amount=100)

    assert count_nonzero_params(model) == 266_610 - 100
