"""Group lasso, network slimming and magnitude pruning on tensors small enough to check by hand."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from baselines import (
    apply_masks,
    batchnorm_scales,
    cubic_sparsity,
    global_threshold,
    group_lasso_penalty,
    incoming_group_norms,
    insert_batchnorm,
    make_permanent,
    outgoing_group_norms,
    prune_to_sparsity,
    pruned_count,
    slimming_penalty,
    weight_count,
)
from benchmarks.methods import GroupLasso, MagnitudePruning, NetworkSlimming
from benchmarks.models import lenet_300_100, lenet_5


def set_weight(layer: nn.Module, values, bias=None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values, dtype=torch.float32).view_as(layer.weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def values_of(tensor: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in tensor.detach().tolist()]


# Group lasso ------------------------------------------------------------


def test_outgoing_linear():
    layer = set_weight(nn.Linear(2, 2, bias=False), [[3.0, 1.0], [4.0, 2.0]])

    # Unit j's group is column j of the consumer's weight.
    assert values_of(outgoing_group_norms(layer, 2)) == [5.0, round(math.sqrt(5.0), 5)]


def test_outgoing_after_flatten():
    # 3 channels of 1x2 positions flattened channel-major: unit c owns columns 2c and 2c+1.
    layer = set_weight(nn.Linear(6, 2, bias=False), [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])

    norms = outgoing_group_norms(layer, 3)

    expected = [math.sqrt(1 + 4 + 49 + 64), math.sqrt(9 + 16 + 81 + 100), math.sqrt(25 + 36 + 121 + 144)]
    assert values_of(norms) == [round(v, 5) for v in expected]


def test_outgoing_flatten_layout():
    # The groups follow nn.Flatten: zeroing channel 1 of a (1, 3, 1, 2) map
    # changes only the products with columns 2 and 3.
    layer = set_weight(nn.Linear(6, 1, bias=False), [[0, 0, 5, 7, 0, 0]])
    feature_map = torch.ones(1, 3, 1, 2)
    silenced = feature_map.clone()
    silenced[:, 1] = 0.0

    assert layer(nn.Flatten()(feature_map)).item() == 12.0
    assert layer(nn.Flatten()(silenced)).item() == 0.0
    assert values_of(outgoing_group_norms(layer, 3)) == [0.0, round(math.sqrt(74.0), 5), 0.0]


def test_outgoing_conv():
    # weight[o, i, 0, :]: (0,0) = [1, 2], (0,1) = [3, 4], (1,0) = [5, 6], (1,1) = [7, 8].
    layer = set_weight(nn.Conv2d(2, 2, kernel_size=(1, 2), bias=False), list(range(1, 9)))

    norms = outgoing_group_norms(layer, 2)

    assert values_of(norms) == [round(math.sqrt(1 + 4 + 25 + 36), 5), round(math.sqrt(9 + 16 + 49 + 64), 5)]


def test_outgoing_not_multiple():
    with pytest.raises(ValueError, match="not a multiple of 2 units"):
        outgoing_group_norms(nn.Linear(5, 1), 2)


def test_outgoing_wrong_layer():
    with pytest.raises(TypeError, match="BatchNorm1d"):
        outgoing_group_norms(nn.BatchNorm1d(2), 2)


def test_incoming_with_bias():
    layer = set_weight(nn.Linear(2, 2), [[3.0, 0.0], [1.0, 2.0]], bias=[4.0, 2.0])

    assert values_of(incoming_group_norms(layer)) == [5.0, 3.0]


def test_incoming_without_bias():
    layer = set_weight(nn.Linear(2, 2), [[3.0, 0.0], [1.0, 2.0]], bias=[4.0, 2.0])

    assert values_of(incoming_group_norms(layer, include_bias=False)) == [3.0, round(math.sqrt(5.0), 5)]


def test_incoming_conv():
    # Output channel o's group is weight[o] (2 inputs x 1x2 kernel) and bias[o].
    layer = set_weight(nn.Conv2d(2, 2, kernel_size=(1, 2)), list(range(1, 9)), bias=[1.0, -1.0])

    expected = [math.sqrt(1 + 4 + 9 + 16 + 1), math.sqrt(25 + 36 + 49 + 64 + 1)]
    assert values_of(incoming_group_norms(layer)) == [round(v, 5) for v in expected]


def test_group_lasso_penalty():
    penalty = group_lasso_penalty([torch.tensor([3.0, 4.0]), torch.tensor([1.0])], 0.5)

    assert penalty.item() == 4.0


def test_group_lasso_penalty_empty():
    assert group_lasso_penalty([], 0.5).item() == 0.0


def tiny_mlp() -> nn.Sequential:
    model = nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(2, 2), relu1=nn.ReLU(), fc2=nn.Linear(2, 1))
    )
    set_weight(model.fc1, [[3.0, 1.0], [4.0, 2.0]], bias=[0.0, 12.0])
    set_weight(model.fc2, [[6.0, 8.0]], bias=[1.0])
    return model


def test_method_outgoing_penalty():
    model = tiny_mlp()

    penalty = GroupLasso({"strength": 0.1}).penalty(model)

    # Input groups are fc1's columns (norms 5 and sqrt(5)), and fc1's unit groups are fc2's columns (6 and 8).
    assert penalty.item() == pytest.approx(0.1 * (5.0 + math.sqrt(5.0) + 6.0 + 8.0), rel=1e-6)


def test_method_incoming_penalty():
    model = tiny_mlp()

    penalty = GroupLasso({"strength": 0.1, "group": "incoming"}).penalty(model)

    # Only fc1's units: rows with bias, [3, 1, 0] and [4, 2, 12].
    assert penalty.item() == pytest.approx(0.1 * (math.sqrt(10.0) + math.sqrt(164.0)), rel=1e-6)


def test_method_group_sites():
    assert GroupLasso({}).sites(lenet_300_100()) == ["input", "fc1", "fc2"]
    assert GroupLasso({"group": "incoming"}).sites(lenet_300_100()) == ["fc1", "fc2"]


def test_method_natural_keep():
    keep = GroupLasso({"threshold": 5.5}).natural_keep(tiny_mlp())

    # Both input groups (norms 5 and sqrt(5)) fall below 5.5, so only the
    # strongest one stays: a layer is never emptied.
    assert keep["input"].tolist() == [True, False]
    assert keep["fc1"].tolist() == [True, True]


# Network slimming -------------------------------------------------------


def test_slimming_penalty_hand():
    penalty = slimming_penalty([torch.tensor([0.5, -2.0]), torch.tensor([1.5])], 0.1)

    assert penalty.item() == pytest.approx(0.1 * (0.5 + 2.0 + 1.5), rel=1e-6)


def test_slimming_penalty_empty():
    assert slimming_penalty([], 0.1).item() == 0.0


def test_insert_batchnorm_names():
    model = insert_batchnorm(lenet_5())

    names = [name for name, _ in model.named_children()]
    assert names == [
        "conv1", "conv1_bn", "relu1", "pool1",
        "conv2", "conv2_bn", "relu2", "pool2",
        "flatten", "fc1", "fc1_bn", "relu3", "fc2",
    ]


def test_insert_batchnorm_kinds():
    model = insert_batchnorm(lenet_5())

    assert isinstance(model.conv1_bn, nn.BatchNorm2d)
    assert isinstance(model.fc1_bn, nn.BatchNorm1d)
    assert model.conv2_bn.num_features == 50


def test_insert_batchnorm_idempotent():
    once = insert_batchnorm(lenet_300_100())
    twice = insert_batchnorm(once)

    assert [name for name, _ in twice.named_children()] == [name for name, _ in once.named_children()]


def test_batchnorm_scales_abs():
    model = insert_batchnorm(lenet_300_100())
    with torch.no_grad():
        model.fc2_bn.weight.copy_(torch.linspace(-1.0, 1.0, 100))

    scales = batchnorm_scales(model)

    assert sorted(scales) == ["fc1", "fc2"]
    assert torch.equal(scales["fc2"], torch.linspace(-1.0, 1.0, 100).abs())


def test_method_slimming_penalty():
    model = insert_batchnorm(lenet_300_100())
    with torch.no_grad():
        model.fc1_bn.weight.fill_(-0.5)
        model.fc2_bn.weight.fill_(2.0)

    penalty = NetworkSlimming({"strength": 0.01}).penalty(model)

    assert penalty.item() == pytest.approx(0.01 * (300 * 0.5 + 100 * 2.0), rel=1e-6)


def test_global_threshold_half():
    scales = {"a": torch.tensor([0.1, 0.4]), "b": torch.tensor([-0.2, 0.3])}

    # Sorted abs values 0.1, 0.2, 0.3, 0.4: the midpoint between the 2nd and 3rd.
    assert global_threshold(scales, 0.5) == pytest.approx(0.25)


def test_global_threshold_quarters():
    scales = {"a": torch.tensor([0.1, 0.4]), "b": torch.tensor([-0.2, 0.3])}

    assert global_threshold(scales, 0.25) == pytest.approx(0.15)
    assert global_threshold(scales, 0.75) == pytest.approx(0.35)


def test_global_threshold_zero():
    assert global_threshold({"a": torch.tensor([0.1, 0.4])}, 0.0) == 0.0


def test_global_threshold_count():
    values = torch.randn(50, generator=torch.Generator().manual_seed(0))
    scales = {"a": values[:20], "b": values[20:]}

    threshold = global_threshold(scales, 0.3)

    assert int((values.abs() < threshold).sum()) == 15


def test_global_threshold_invalid():
    with pytest.raises(ValueError, match="fraction must be in"):
        global_threshold({"a": torch.tensor([0.1])}, 1.0)


def test_slimming_keeps_strongest():
    model = insert_batchnorm(lenet_300_100())
    with torch.no_grad():
        model.fc1_bn.weight.copy_(torch.linspace(1.0, 2.0, 300))
        model.fc2_bn.weight.copy_(torch.linspace(0.01, 0.1, 100))

    keep = NetworkSlimming({"fraction": 0.5}).natural_keep(model)

    # 200 of 400 channels fall below the threshold: all 100 of fc2 and the 100 smallest of fc1.
    # fc2 keeps its strongest channel, so the layer survives.
    assert int(keep["fc1"].sum()) == 200
    assert int(keep["fc2"].sum()) == 1
    assert bool(keep["fc2"][99])


# Magnitude pruning ------------------------------------------------------


def ranked_model() -> nn.Sequential:
    """Return two layers whose 10 weights have the magnitudes 1 to 10, mixed in sign and order."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    set_weight(model[0], [[7.0, -1.0, 4.0], [-9.0, 2.0, 10.0]])
    set_weight(model[2], [[-3.0, 6.0], [5.0, -8.0]])
    return model


def masked_magnitudes(model: nn.Sequential) -> list[float]:
    values = []
    for layer in (model[0], model[2]):
        values += layer.weight_orig[layer.weight_mask == 0].abs().tolist()
    return sorted(values)


def test_magnitude_exact_count():
    model = ranked_model()

    prune_to_sparsity(model, 0.3)

    assert weight_count(model) == 10
    assert pruned_count(model) == 3
    assert masked_magnitudes(model) == [1.0, 2.0, 3.0]


def test_magnitude_lenet_count():
    torch.manual_seed(0)
    model = lenet_300_100()

    prune_to_sparsity(model, 0.9)

    # round(0.9 * 266,200 weights) of the three layers.
    assert pruned_count(model) == 239_580


def test_magnitude_masks_grow():
    model = ranked_model()
    prune_to_sparsity(model, 0.3)
    first = [layer.weight_mask.clone() for layer in (model[0], model[2])]

    prune_to_sparsity(model, 0.6)

    assert pruned_count(model) == 6
    assert masked_magnitudes(model) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    for layer, before in zip((model[0], model[2]), first):
        assert bool((layer.weight_mask <= before).all())


def test_magnitude_lower_target_noop():
    model = ranked_model()
    prune_to_sparsity(model, 0.6)

    prune_to_sparsity(model, 0.3)

    assert pruned_count(model) == 6


def test_magnitude_grown_weight_stays_masked():
    model = ranked_model()
    prune_to_sparsity(model, 0.3)
    with torch.no_grad():
        model[0].weight_orig[0, 1] = 100.0  # was -1, masked

    prune_to_sparsity(model, 0.4)

    assert model[0].weight_mask[0, 1].item() == 0.0
    assert pruned_count(model) == 4


def test_magnitude_ranks_current_weights():
    # Fails until prune_to_sparsity ranks weight_orig * weight_mask. It ranks
    # ``module.weight``, which stays stale until the next forward pass, so the
    # ranking ignores the optimizer step between the last batch and on_epoch_end.
    model = ranked_model()
    prune_to_sparsity(model, 0.3)
    with torch.no_grad():
        model[2].weight_orig[1, 1] = 0.5  # was -8, now the smallest kept weight

    prune_to_sparsity(model, 0.4)

    assert model[2].weight_mask[1, 1].item() == 0.0


def test_magnitude_invalid_sparsity():
    with pytest.raises(ValueError, match="sparsity must be in"):
        prune_to_sparsity(ranked_model(), 1.0)


@pytest.mark.parametrize(
    ("step", "total", "final", "initial", "expected"),
    [
        (0, 4, 0.9, 0.0, 0.0),
        (1, 4, 0.9, 0.0, 0.9 - 0.9 * 0.75**3),
        (2, 4, 0.9, 0.0, 0.9 - 0.9 * 0.5**3),
        (3, 4, 0.9, 0.0, 0.9 - 0.9 * 0.25**3),
        (4, 4, 0.9, 0.0, 0.9),
        (6, 4, 0.9, 0.0, 0.9),
        (2, 4, 0.9, 0.5, 0.9 - 0.4 * 0.5**3),
        (0, 0, 0.8, 0.0, 0.8),
    ],
)
def test_cubic_sparsity(step, total, final, initial, expected):
    assert cubic_sparsity(step, total, final, initial) == pytest.approx(expected, abs=1e-12)


def test_cubic_sparsity_values():
    # 0.9 * (1 - 0.75^3) = 0.9 * 0.578125
    assert cubic_sparsity(1, 4, 0.9) == pytest.approx(0.5203125, abs=1e-12)


def test_make_permanent_zeros():
    model = ranked_model()
    prune_to_sparsity(model, 0.3)

    make_permanent(model)

    assert int((model[0].weight == 0).sum()) == 2
    assert int((model[2].weight == 0).sum()) == 1
    assert model[0].weight[0, 1].item() == 0.0


def test_make_permanent_no_hooks():
    model = ranked_model()
    prune_to_sparsity(model, 0.3)

    make_permanent(model)

    for layer in (model[0], model[2]):
        assert len(layer._forward_pre_hooks) == 0
        assert not hasattr(layer, "weight_mask")
        assert not hasattr(layer, "weight_orig")
        assert isinstance(layer.weight, nn.Parameter)


def test_make_permanent_keeps_output():
    model = ranked_model()
    prune_to_sparsity(model, 0.3)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)

    make_permanent(model)

    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_apply_masks_explicit():
    model = ranked_model()
    mask = torch.tensor([[True, False, True], [True, True, False]])

    apply_masks(model, {"0.weight": mask})

    assert torch.equal(model[0].weight_mask, mask.float())
    assert model[0].weight[1, 2].item() == 0.0


def test_method_magnitude_schedule():
    torch.manual_seed(0)
    model = lenet_300_100()
    method = MagnitudePruning({"final_sparsity": 0.9})

    method.on_epoch_end(model, 0, 2)
    after_first = pruned_count(model)
    method.on_epoch_end(model, 1, 2)

    # Epoch 0 of 2 ends at step 1: sparsity 0.9 - 0.9 * 0.5^3 = 0.7875.
    assert after_first == round(0.7875 * 266_200)
    assert pruned_count(model) == round(0.9 * 266_200)
