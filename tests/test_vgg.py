"""VGG-16 for 32x32 inputs: exact counts, prunable sites, gates, and physical pruning.

Hand derivation of the counts (CIFAR-10: 10 classes; CIFAR-100: 100):

Parameters. A 3x3 convolution with bias from c_in to c_out channels has
9 * c_in * c_out + c_out parameters:

    conv1    3 ->  64:     1,728 +  64 =     1,792
    conv2   64 ->  64:    36,864 +  64 =    36,928
    conv3   64 -> 128:    73,728 + 128 =    73,856
    conv4  128 -> 128:   147,456 + 128 =   147,584
    conv5  128 -> 256:   294,912 + 256 =   295,168
    conv6, conv7  256 -> 256: 2 x (589,824 + 256)      = 1,180,160
    conv8  256 -> 512: 1,179,648 + 512 =               1,180,160
    conv9, conv10 512 -> 512: 2 x (2,359,296 + 512)    = 4,719,616
    conv11 .. conv13 512 -> 512: 3 x (2,359,296 + 512) = 7,079,424
    convolutions in all                                = 14,714,688

BatchNorm has a scale and a shift per channel (running statistics are
buffers): 2 * (2*64 + 2*128 + 3*256 + 6*512) = 2 * 4,224 = 8,448.
fc1 = 512 * 512 + 512 = 262,656; fc2 = 512 * k + k = 5,130 (k = 10) or
51,300 (k = 100).
Total: 14,714,688 + 8,448 + 262,656 + 5,130 = 14,990,922 (CIFAR-10) and
14,714,688 + 8,448 + 262,656 + 51,300 = 15,037,092 (CIFAR-100).

FLOPs as fvcore counts them (one multiply-add is one flop, bias ignored,
BatchNorm in evaluation mode 2 per element, ReLU and max pooling free). A
convolution at an H x W map costs H * W * 9 * c_in * c_out. The five stages'
maps are 32x32 (1,024 positions), 16x16 (256), 8x8 (64), 4x4 (16) and 2x2 (4):

    conv1   1,024 * 9 *   3 *  64 =  1,769,472
    conv2   1,024 * 9 *  64 *  64 = 37,748,736
    conv3     256 * 9 *  64 * 128 = 18,874,368
    conv4     256 * 9 * 128 * 128 = 37,748,736
    conv5      64 * 9 * 128 * 256 = 18,874,368
    conv6, conv7  2 * 64 * 9 * 256 * 256   = 75,497,472
    conv8      16 * 9 * 256 * 512 = 18,874,368
    conv9, conv10 2 * 16 * 9 * 512 * 512   = 75,497,472
    conv11 .. conv13 3 * 4 * 9 * 512 * 512 = 28,311,552
    convolutions in all                    = 313,196,544

BatchNorm elements: 2*64*1,024 + 2*128*256 + 3*256*64 + 3*512*16 + 3*512*4
= 131,072 + 65,536 + 49,152 + 24,576 + 6,144 = 276,480, so 552,960 flops.
fc1 = 512 * 512 = 262,144; fc2 = 512 * k = 5,120 or 51,200.
Total: 313,196,544 + 552,960 + 262,144 + 5,120 = 314,016,768 (CIFAR-10) and
313,196,544 + 552,960 + 262,144 + 51,200 = 314,062,848 (CIFAR-100).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import benchmarks.methods  # noqa: F401  (registers the methods)
import vib
from baselines import insert_batchnorm
from benchmarks import measure
from benchmarks.models import ModelSpec, build_model, vgg_16
from benchmarks.registry import METHODS, MODELS
from benchmarks.structure import find_sites, mask_units

CONVS = [f"conv{i}" for i in range(1, 14)]
# The last convolution of each stage, which a 2x2 max pooling follows.
STAGE_ENDS = ["conv2", "conv4", "conv7", "conv10", "conv13"]

EXPECTED_PARAMS = {10: 14_990_922, 100: 15_037_092}
EXPECTED_FLOPS = {10: 314_016_768, 100: 314_062_848}
CONV_PARAMS = 14_714_688
CONV_FLOPS = 313_196_544


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's VGG passes on one thread, because spinning OpenMP threads slow a shared, busy CPU down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vgg() -> nn.Sequential:
    torch.manual_seed(0)
    return vgg_16((3, 32, 32), num_classes=10).eval()


def test_vgg16_builds_from_dataset_spec() -> None:
    assert "vgg16" in MODELS
    model = build_model("vgg16", ModelSpec((3, 32, 32), 100))
    assert model.fc2.out_features == 100
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_vgg16_layer_names_and_order(vgg: nn.Sequential) -> None:
    names = [name for name, _ in vgg.named_children()]
    assert [n for n in names if n.startswith("conv")] == CONVS
    assert [n for n in names if n.startswith("pool")] == [f"pool{i}" for i in range(1, 6)]
    # Each convolution is followed by its BatchNorm and ReLU; each stage ends with a pooling.
    for i, name in enumerate(CONVS, start=1):
        at = names.index(name)
        assert names[at + 1 : at + 3] == [f"bn{i}", f"relu{i}"]
    for stage, end in enumerate(STAGE_ENDS, start=1):
        assert names[names.index(end) + 3] == f"pool{stage}"
    assert names[-4:] == ["flatten", "fc1", "relu14", "fc2"]


@pytest.mark.parametrize("num_classes", [10, 100])
def test_vgg16_parameter_count(num_classes: int) -> None:
    model = vgg_16(num_classes=num_classes)
    convs = sum(p.numel() for name, m in model.named_children() if name.startswith("conv") for p in m.parameters())
    assert convs == CONV_PARAMS
    assert measure.count_params(model) == EXPECTED_PARAMS[num_classes]


@pytest.mark.parametrize("num_classes", [10, 100])
def test_vgg16_fvcore_flops(num_classes: int) -> None:
    model = vgg_16(num_classes=num_classes)
    flops, unsupported = measure.flops_fvcore(model, (3, 32, 32))
    assert flops == EXPECTED_FLOPS[num_classes]
    # NOTE: fvcore counts max pooling as free and lists it as unsupported. Nothing else is skipped.
    assert set(unsupported) <= {"aten::max_pool2d"}


def test_vgg16_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="32x32"):
        vgg_16((1, 28, 28))


def test_vgg16_hidden_layers_are_sites(vgg: nn.Sequential) -> None:
    sites = find_sites(vgg)
    assert [site.name for site in sites] == CONVS + ["fc1"]
    assert all(site.kind == "channels" for site in sites[:13])
    consumers = {site.name: site.consumer for site in sites}
    assert consumers["conv13"] == "fc1"
    assert consumers["fc1"] == "fc2"


def test_gates_sit_after_pooling(vgg: nn.Sequential) -> None:
    gated = vib.insert_gates(vgg)
    names = [name for name, _ in gated.named_children()]
    assert sorted(vib.gates(gated)) == sorted(CONVS + ["fc1"])
    # A stage's last gate follows its max pooling, so only linear steps lie between it and the next layer.
    for stage, end in enumerate(STAGE_ENDS, start=1):
        assert names[names.index(f"{end}_ib") - 1] == f"pool{stage}"
    assert names[names.index("conv13_ib") + 1] == "flatten"
    assert names[names.index("fc1_ib") - 1] == "relu14"


def test_folded_gates_equal_gated_vgg16(vgg: nn.Sequential, randomize, generator) -> None:
    gated = randomize(vib.insert_gates(vgg), generator).eval()
    x = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(vib.fold_gates(gated)(x), gated(x), rtol=1e-4, atol=1e-4)


def test_slimming_adds_only_fc1_batchnorm(vgg: nn.Sequential) -> None:
    with_bn = insert_batchnorm(vgg)
    added = [name for name, _ in with_bn.named_children() if name not in dict(vgg.named_children())]
    assert added == ["fc1_bn"]


def _random_keep(sizes: dict[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep about half the units of each site, always at least one."""
    keep = {}
    for site, units in sizes.items():
        mask = torch.rand(units, generator=generator) < 0.5
        mask[torch.randint(units, (1,), generator=generator)] = True
        keep[site] = mask
    return keep


@pytest.mark.parametrize("method_name", ["vibnet", "group_lasso", "slimming"])
def test_physical_pruning_equals_masking(vgg: nn.Sequential, method_name: str, randomize, generator) -> None:
    method = METHODS.get(method_name)()
    model = randomize(method.prepare(vgg), generator).eval()
    sizes = {site: scores.numel() for site, scores in method.scores(model).items()}
    assert sorted(sizes) == sorted(CONVS + ["fc1"])
    keep = _random_keep(sizes, generator)
    x = torch.randn(4, 3, 32, 32, generator=generator)

    pruned = method.apply(model, keep, x[:1]).eval()
    if method_name == "vibnet":
        # The gates' own mu scales the kept units; the requested masks decide which are kept.
        gate_masks = vib.masks(model)
        plain = vib.fold_gates(model, keep={site: keep.get(site, gate_masks[site]) for site in gate_masks})
    else:
        plain = method.plain(model)
    masked = mask_units(plain, keep).eval()

    with torch.no_grad():
        expected, actual = masked(x), pruned(x)
    assert expected.abs().max() > 1e-3, "outputs near zero would make the comparison empty"
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert measure.count_params(pruned) < measure.count_params(plain)
    assert {site.name: site.units for site in find_sites(pruned)} == {s: int(k.sum()) for s, k in keep.items()}


def test_vibnet_natural_pruning_equals_gates(vgg: nn.Sequential, randomize, generator) -> None:
    method = METHODS.get("vibnet")()
    gated = randomize(method.prepare(vgg), generator).eval()
    keep = method.natural_keep(gated)
    assert all(bool(mask.any()) for mask in keep.values()), "a site lost every unit; draw other gates"
    x = torch.randn(4, 3, 32, 32, generator=generator)
    pruned = method.apply(gated, keep, x[:1]).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), gated(x), rtol=1e-4, atol=1e-4)
