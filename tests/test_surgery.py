"""Physical unit removal against masking, and pruning to a budget target, for every method."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import benchmarks.methods  # noqa: F401  (registers the built-in methods)
import vib
from benchmarks.budget import structured_budget, unstructured_budget
from benchmarks.measure import activation_bytes, count_nonzero_params, count_params, flops_fvcore, flops_nonzero
from benchmarks.models import lenet_300_100, lenet_5
from benchmarks.registry import METHODS
from benchmarks.structure import FeatureSelect, find_sites, mask_units, remove_units, widths

MNIST_SHAPE = (1, 28, 28)
SMALL_SHAPE = (1, 8, 8)
STRUCTURED = ["vibnet", "group_lasso", "slimming"]
RANKINGS = ["global", "layer_normalized", "uniform"]


def small_mlp() -> nn.Sequential:
    """Return an MLP 64-48-32-10 for 1x8x8 inputs (2,778 parameters)."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(64, 48),
            relu1=nn.ReLU(),
            fc2=nn.Linear(48, 32),
            relu2=nn.ReLU(),
            fc3=nn.Linear(32, 10),
        )
    )


NETWORKS = {
    "small": (small_mlp, SMALL_SHAPE),
    "lenet300": (lenet_300_100, MNIST_SHAPE),
    "lenet5": (lenet_5, MNIST_SHAPE),
}


def prepared(name: str, build, generator: torch.Generator, randomize) -> tuple:
    """Return the method, the dense network and the method's prepared network with a randomized state."""
    torch.manual_seed(0)
    method = METHODS.get(name)({})
    dense = build().eval()
    model = randomize(method.prepare(dense), generator).eval()
    return method, dense, model


def plain_form(name: str, method, model: nn.Module) -> nn.Sequential:
    """Return the gate-free network that masks are compared on (every gate folded with full keep)."""
    if name == "vibnet":
        full = {site: torch.ones(gate.num_units, dtype=torch.bool) for site, gate in vib.gates(model).items()}
        return vib.fold_gates(model, keep=full)
    return method.plain(model)


def random_keep(method, model: nn.Module, plain: nn.Sequential, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Return a random keep mask for each of the method's sites, each with at least one unit and one removed."""
    units = {site.name: site.units for site in find_sites(plain)}
    keep = {}
    for site in method.sites(model):
        count = units[site]
        mask = torch.rand(count, generator=generator) < 0.5
        anchor = int(torch.randint(count, (1,), generator=generator))
        mask[anchor] = True
        if bool(mask.all()):
            mask[(anchor + 1) % count] = False
        keep[site] = mask
    return keep


@pytest.mark.parametrize("build", [lenet_300_100, lenet_5], ids=["lenet300", "lenet5"])
@pytest.mark.parametrize("name", STRUCTURED)
def test_apply_equals_masked(name, build, generator, randomize):
    method, _, model = prepared(name, build, generator, randomize)
    plain = plain_form(name, method, model)
    keep = random_keep(method, model, plain, generator)
    x = torch.randn(16, *MNIST_SHAPE, generator=generator)

    compact = method.apply(model, keep, torch.zeros(1, *MNIST_SHAPE)).eval()
    masked = mask_units(plain, keep).eval()

    with torch.no_grad():
        assert torch.allclose(compact(x), masked(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("build", [lenet_300_100, lenet_5], ids=["lenet300", "lenet5"])
@pytest.mark.parametrize("name", STRUCTURED)
def test_apply_fewer_params(name, build, generator, randomize):
    method, _, model = prepared(name, build, generator, randomize)
    plain = plain_form(name, method, model)
    keep = random_keep(method, model, plain, generator)

    compact = method.apply(model, keep, torch.zeros(1, *MNIST_SHAPE))

    assert count_params(compact) < count_params(plain)
    assert widths(compact) == {**widths(plain), **{site: int(mask.sum()) for site, mask in keep.items()}}


@pytest.mark.parametrize("name", ["vibnet", "group_lasso"])
def test_pruned_inputs_original_shape(name, generator, randomize):
    method, _, model = prepared(name, lenet_300_100, generator, randomize)
    plain = plain_form(name, method, model)
    keep = random_keep(method, model, plain, generator)
    kept_count = int(keep["input"].sum())

    compact = method.apply(model, keep, torch.zeros(1, *MNIST_SHAPE)).eval()

    assert kept_count < 784
    assert isinstance(compact.select, FeatureSelect)
    assert compact.select.in_features == 784
    assert torch.equal(compact.select.index, keep["input"].nonzero().flatten())
    assert compact.fc1.in_features == kept_count
    with torch.no_grad():
        assert compact(torch.zeros(4, *MNIST_SHAPE)).shape == (4, 10)


def test_all_inputs_kept_no_select():
    # Fails until remove_units skips the FeatureSelect when no input feature
    # is removed: the no-op gather adds 784 floats (3,136 bytes) to
    # activation_bytes and a copy to every latency measurement.
    model = lenet_300_100().eval()
    keep = {"input": torch.ones(784, dtype=torch.bool), "fc1": torch.ones(300, dtype=torch.bool)}

    compact = remove_units(model, keep, torch.zeros(1, *MNIST_SHAPE))

    assert activation_bytes(compact, MNIST_SHAPE) == activation_bytes(model, MNIST_SHAPE)


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("vibnet", lenet_300_100, ["input", "fc1", "fc2"]),
        ("group_lasso", lenet_300_100, ["input", "fc1", "fc2"]),
        ("slimming", lenet_300_100, ["fc1", "fc2"]),
        ("vibnet", lenet_5, ["conv1", "conv2", "fc1"]),
        ("group_lasso", lenet_5, ["conv1", "conv2", "fc1"]),
        ("slimming", lenet_5, ["conv1", "conv2", "fc1"]),
    ],
)
def test_method_sites(name, build, expected, generator, randomize):
    method, _, model = prepared(name, build, generator, randomize)

    assert method.sites(model) == expected


# Budget targets ---------------------------------------------------------


def dense_cost(dense: nn.Module, metric: str, input_shape: tuple[int, ...]) -> int:
    return flops_fvcore(dense, input_shape)[0] if metric == "flops" else count_params(dense)


def search_budget(method, model, input_shape, metric, target, cost, ranking):
    """Run the budget search the way the runner does for ``method``."""
    search = structured_budget if method.structured else unstructured_budget
    base = method.plain(model) if method.structured else model
    return search(method.scores(model), base, input_shape, metric, target, cost, ranking)


def measured_cost(method, pruned: nn.Module, metric: str, input_shape: tuple[int, ...]) -> int:
    """Return fvcore's count or the parameter count, over non-zero weights for unstructured methods."""
    if method.structured:
        return flops_fvcore(pruned, input_shape)[0] if metric == "flops" else count_params(pruned)
    return flops_nonzero(pruned, input_shape) if metric == "flops" else count_nonzero_params(pruned)


@pytest.mark.parametrize("ranking", RANKINGS)
@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", STRUCTURED + ["magnitude"])
def test_budget_quarter(name, network, metric, ranking, generator, randomize):
    build, input_shape = NETWORKS[network]
    method, dense, model = prepared(name, build, generator, randomize)
    cost = dense_cost(dense, metric, input_shape)

    result = search_budget(method, model, input_shape, metric, 0.25, cost, ranking)
    pruned = method.finalize(method.apply(model, result.keep, torch.zeros(1, *input_shape)))
    fraction = measured_cost(method, pruned, metric, input_shape) / cost

    assert result.reason is None
    assert 0.23 <= fraction <= 0.25
    assert result.achieved == pytest.approx(fraction, rel=1e-9)


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", STRUCTURED + ["magnitude"])
def test_budget_impossible(name, network, generator, randomize):
    build, input_shape = NETWORKS[network]
    method, dense, model = prepared(name, build, generator, randomize)

    result = search_budget(method, model, input_shape, "flops", 1e-6, dense_cost(dense, "flops", input_shape), "global")

    assert result.keep is None
    assert result.achieved is None
    assert result.reason.startswith("keeping one ")
