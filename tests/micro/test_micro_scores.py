"""Micro-benchmarks of each method's importance scores (``method.scores``) on LeNet-5."""

from __future__ import annotations

import pytest
import torch

import benchmarks.methods  # noqa: F401  (registers the built-in methods)
from benchmarks.models import lenet_5
from benchmarks.registry import METHODS

METHOD_NAMES = ["dense", "vibnet", "group_lasso", "slimming", "magnitude"]


@pytest.mark.benchmark(group="scores")
@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_scores_lenet5(benchmark, method_name):
    torch.manual_seed(0)
    method = METHODS.get(method_name)()
    model = method.prepare(lenet_5())

    scores = benchmark(method.scores, model)

    assert set(scores) == set(method.sites(model))
    for site, values in scores.items():
        assert values.numel() > 0, site
        assert not values.requires_grad, site
