"""The information-bottleneck gate, its KL bound, and gate insertion and folding."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

import vib
from benchmarks.models import lenet_300_100, lenet_5

MNIST_SHAPE = (1, 28, 28)


def make_gate(mu: list[float], log_sigma2: list[float], **options) -> vib.InformationBottleneck:
    gate = vib.InformationBottleneck(len(mu), **options)
    with torch.no_grad():
        gate.mu.copy_(torch.tensor(mu))
        gate.log_sigma2.copy_(torch.tensor(log_sigma2))
    return gate


def direct_kl(mu: list[float], log_sigma2: list[float]) -> float:
    """Return 0.5 * sum(log(1 + mu^2 / sigma^2)) in double precision."""
    return 0.5 * sum(math.log(1.0 + m * m / math.exp(s)) for m, s in zip(mu, log_sigma2))


MU = [0.5, -1.2, 2.0, 0.03]
LOG_SIGMA2 = [-1.0, 0.3, -4.0, 2.0]


def test_kl_2d():
    gate = make_gate(MU, LOG_SIGMA2, kl_factor=2.5)
    gate(torch.ones(3, 4))

    assert gate.kl().item() == pytest.approx(2.5 * direct_kl(MU, LOG_SIGMA2), rel=1e-5)


def test_kl_4d_spatial():
    gate = make_gate(MU, LOG_SIGMA2, kl_factor=0.5)
    gate(torch.ones(2, 4, 3, 5))

    # Every one of the 3 * 5 positions counts.
    assert int(gate.spatial_size) == 15
    assert gate.kl().item() == pytest.approx(0.5 * 15 * direct_kl(MU, LOG_SIGMA2), rel=1e-5)


def test_kl_small_sigma_finite():
    gate = make_gate([1.0], [-80.0])
    gate(torch.ones(1, 1))

    # log(1 + 1 / e^-80) = log(1 + e^80), which is 80 to double precision.
    assert gate.kl().item() == pytest.approx(0.5 * 80.0, rel=1e-6)


def test_kl_total_sums_gates():
    first = make_gate(MU, LOG_SIGMA2)
    second = make_gate([1.0, -0.5], [0.0, -2.0], kl_factor=3.0)
    model = nn.Sequential(OrderedDict(a_ib=first, fc=nn.Linear(4, 2), b_ib=second))
    model(torch.ones(1, 4))

    expected = direct_kl(MU, LOG_SIGMA2) + 3.0 * direct_kl([1.0, -0.5], [0.0, -2.0])
    assert vib.kl_total(model).item() == pytest.approx(expected, rel=1e-5)


def test_kl_total_without_gates():
    assert vib.kl_total(nn.Sequential(nn.Linear(2, 2))).item() == 0.0


def test_gate_training_samples():
    torch.manual_seed(0)
    gate = make_gate([1.0, -2.0], [0.0, 0.0]).train()
    x = torch.ones(4, 2)

    first = gate(x)
    second = gate(x)

    assert not torch.equal(first, second)
    # Each sample gets its own noise.
    assert not torch.equal(first[0], first[1])


def test_gate_training_distribution():
    torch.manual_seed(0)
    # sigma = exp(0.5 * log sigma^2): 0.5 for the first unit, 2 for the second.
    gate = make_gate([1.0, -3.0], [math.log(0.25), math.log(4.0)]).train()

    z = gate(torch.ones(40_000, 2))

    # The standard errors are 0.0025 and 0.01 for the means, about 0.002 and 0.007 for the stds.
    assert z[:, 0].mean().item() == pytest.approx(1.0, abs=0.015)
    assert z[:, 1].mean().item() == pytest.approx(-3.0, abs=0.06)
    assert z[:, 0].std().item() == pytest.approx(0.5, abs=0.015)
    assert z[:, 1].std().item() == pytest.approx(2.0, abs=0.05)


def test_gate_eval_deterministic():
    # The second unit has log_alpha = 3 - log(0.01) > 0, so it is pruned.
    gate = make_gate([1.5, 0.1, -0.7], [-2.0, 3.0, -5.0]).eval()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))

    first = gate(x)
    second = gate(x)

    assert torch.equal(first, second)
    assert torch.allclose(first, x * torch.tensor([1.5, 0.0, -0.7]), rtol=0, atol=1e-7)


def test_gate_eval_4d():
    gate = make_gate([2.0, 0.1], [0.0, 3.0]).eval()
    x = torch.ones(1, 2, 2, 2)

    out = gate(x)

    assert torch.equal(out[0, 0], torch.full((2, 2), 2.0))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))


def test_gate_wrong_units():
    gate = vib.InformationBottleneck(3)

    with pytest.raises(ValueError, match="expects 3 units"):
        gate(torch.ones(2, 4))


def test_log_alpha_values():
    gate = make_gate([2.0, 0.1, -0.5], [0.0, 1.0, -3.0])

    expected = torch.tensor([0.0 - math.log(4.0), 1.0 - math.log(0.01), -3.0 - math.log(0.25)])
    assert torch.allclose(gate.log_alpha(), expected, rtol=1e-5, atol=1e-5)


def test_mask_sign_convention():
    # Large sigma and small mu: an uninformative unit, so it is pruned.
    gate = make_gate([2.0, 0.1], [0.0, 1.0])

    assert gate.threshold == 0.0
    assert gate.mask().tolist() == [1.0, 0.0]
    assert gate.num_kept() == 1


def test_mask_threshold():
    # log_alpha of the first unit is -log(4), about -1.39: below 0, above -2.
    gate = make_gate([2.0, 0.1], [0.0, 1.0], threshold=-2.0)

    assert gate.mask().tolist() == [0.0, 0.0]


def test_mask_helpers():
    gate = make_gate([2.0, 0.1], [0.0, 1.0])
    model = nn.Sequential(OrderedDict(fc1_ib=gate, fc2=nn.Linear(2, 1)))

    assert vib.masks(model)["fc1"].tolist() == [True, False]
    assert torch.equal(vib.log_alphas(model)["fc1"], gate.log_alpha().detach())


def test_gate_init():
    torch.manual_seed(0)
    gate = vib.InformationBottleneck(1000)

    # mu ~ N(1, 0.01^2): every draw lies within 5 standard deviations of 1.
    assert (gate.mu - 1.0).abs().max().item() < 0.05
    assert torch.equal(gate.log_sigma2, torch.full((1000,), -9.0))
    assert gate.num_kept() == 1000


def test_gate_num_units_invalid():
    with pytest.raises(ValueError, match="at least 1"):
        vib.InformationBottleneck(0)


def test_insert_gates_mlp_names():
    gated = vib.insert_gates(lenet_300_100())

    names = [name for name, _ in gated.named_children()]
    assert names == ["flatten", "input_ib", "fc1", "relu1", "fc1_ib", "fc2", "relu2", "fc2_ib", "fc3"]


def test_insert_gates_mlp_units():
    gated = vib.insert_gates(lenet_300_100())

    units = {site: gate.num_units for site, gate in vib.gates(gated).items()}
    assert units == {"input": 784, "fc1": 300, "fc2": 100}


def test_insert_gates_lenet5_names():
    gated = vib.insert_gates(lenet_5())

    # A convolution gets no input gate. Each gate sits after the pooling layer.
    names = [name for name, _ in gated.named_children()]
    assert names == [
        "conv1", "relu1", "pool1", "conv1_ib",
        "conv2", "relu2", "pool2", "conv2_ib",
        "flatten", "fc1", "relu3", "fc1_ib", "fc2",
    ]


def test_insert_gates_lenet5_units():
    gated = vib.insert_gates(lenet_5())

    units = {site: gate.num_units for site, gate in vib.gates(gated).items()}
    assert units == {"conv1": 20, "conv2": 50, "fc1": 500}


def test_insert_gates_without_input():
    gated = vib.insert_gates(lenet_300_100(), gate_input=False)

    assert sorted(vib.gates(gated)) == ["fc1", "fc2"]


def test_insert_gates_options():
    gated = vib.insert_gates(lenet_300_100(), kl_factors={"fc1": 4.0}, threshold=1.5, init_log_sigma2=-6.0)
    gates = vib.gates(gated)

    assert gates["fc1"].kl_factor == 4.0
    assert gates["fc2"].kl_factor == 1.0
    assert gates["input"].kl_factor == 1.0
    assert gates["fc2"].threshold == 1.5
    assert torch.equal(gates["fc2"].log_sigma2, torch.full((100,), -6.0))


def test_insert_gates_copies():
    model = lenet_300_100()
    gated = vib.insert_gates(model)

    assert gated.fc1 is not model.fc1
    assert torch.equal(gated.fc1.weight, model.fc1.weight)


def test_insert_gates_no_weighted():
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        vib.insert_gates(nn.Sequential(nn.ReLU()))


def test_insert_gates_output_shape():
    gated = vib.insert_gates(lenet_5()).eval()

    assert gated(torch.zeros(2, *MNIST_SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("build", [lenet_300_100, lenet_5], ids=["lenet300", "lenet5"])
def test_fold_gates_equal(build, generator, randomize):
    torch.manual_seed(0)
    gated = randomize(vib.insert_gates(build()), generator).eval()
    x = torch.randn(16, *MNIST_SHAPE, generator=generator)

    folded = vib.fold_gates(gated).eval()

    # The random state must cover pruned units and kept units with a negative mu.
    all_masks = torch.cat([m for m in vib.masks(gated).values()])
    all_mu = torch.cat([g.mu.detach() for g in vib.gates(gated).values()])
    assert not bool(all_masks.all())
    assert bool((all_masks & (all_mu < 0)).any())
    assert vib.gates(folded) == {}
    with torch.no_grad():
        assert torch.allclose(folded(x), gated(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("build", [lenet_300_100, lenet_5], ids=["lenet300", "lenet5"])
def test_fold_gates_explicit_keep(build, generator, randomize):
    torch.manual_seed(0)
    gated = randomize(vib.insert_gates(build()), generator).eval()
    x = torch.randn(16, *MNIST_SHAPE, generator=generator)
    full = {site: torch.ones(gate.num_units, dtype=torch.bool) for site, gate in vib.gates(gated).items()}

    folded = vib.fold_gates(gated, keep=full).eval()

    # With every unit kept, the gated network multiplies by mu alone.
    for gate in vib.gates(gated).values():
        gate.threshold = math.inf
    with torch.no_grad():
        assert torch.allclose(folded(x), gated(x), rtol=0, atol=1e-5)


def test_fold_gates_maxpool_raises():
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3),
            relu1=nn.ReLU(),
            conv1_ib=vib.InformationBottleneck(4),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 2, 3),
        )
    )

    with pytest.raises(ValueError, match="pool1"):
        vib.fold_gates(model)


def test_fold_gates_unfed_raises():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 2), fc1_ib=vib.InformationBottleneck(2)))

    with pytest.raises(ValueError, match="feeds no weighted layer"):
        vib.fold_gates(model)
