"""Builders shared by the asv benchmarks and the targets script.

Everything is built through the harness's public interfaces (the method
registry, ``prepare``, ``penalty``, ``param_groups``, the budget search and
``make_optimizer``), so a benchmark measures the code a suite run executes.

Importing this module checks that ``benchmarks``, ``vib`` and ``baselines``
resolve to the source tree that contains this file: a comparison against a
base revision is only valid when the base run imports the base code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import baselines.magnitude
import benchmarks.methods  # noqa: F401  (registers the built-in methods)
import benchmarks.registry
import vib.gate
from benchmarks.budget import structured_budget, unstructured_budget
from benchmarks.config import Optimizer
from benchmarks.measure import flops_fvcore
from benchmarks.methods.base import PruningMethod
from benchmarks.models import ModelSpec, build_model
from benchmarks.registry import METHODS
from benchmarks.training import make_optimizer

# The five methods of the comparison, in the order tables show them.
METHOD_NAMES = ("dense", "vibnet", "group_lasso", "slimming", "magnitude")
STRUCTURED_METHOD_NAMES = ("vibnet", "group_lasso", "slimming")

MODEL_NAME = "lenet5"
SPEC = ModelSpec(input_shape=(1, 28, 28), num_classes=10)
SEED = 0

# Timed benchmarks run single-threaded: a shared 2-core CI runner gives
# unstable numbers with more threads, and a fixed count keeps runs comparable.
TIMING_THREADS = 1

# The compact models of the forward-pass benchmarks keep this fraction of the
# dense network's fvcore FLOPs, pruned with each method's own ranking.
COMPACT_FLOPS_FRACTION = 0.25

TREE_ROOT = Path(__file__).resolve().parents[2]


def check_tree_imports() -> None:
    """Raise ImportError unless the project's packages come from the tree that contains this suite.

    The virtual environment installs the project in editable mode, pointing at
    one checkout. A run in another worktree must put that worktree first on
    ``PYTHONPATH``, or it silently measures the other checkout's code.
    """
    # A submodule's file, because an editable install may import ``benchmarks``
    # as a namespace package, whose ``__file__`` is None.
    for module in (benchmarks.registry, vib.gate, baselines.magnitude):
        location = Path(module.__file__).resolve().parents[1]
        if location != TREE_ROOT:
            raise ImportError(
                f"module {module.__name__!r} is imported from {location}, but this asv suite "
                f"is in {TREE_ROOT}; run asv with PYTHONPATH={TREE_ROOT}"
            )


check_tree_imports()


@dataclass
class PreparedStep:
    """One optimizer step of a method's network on a fixed batch, as the training loop runs it."""

    model: nn.Module
    method: PruningMethod
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __call__(self) -> None:
        loss = self.loss_fn(self.model(self.images), self.labels)
        objective = loss + self.method.penalty(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()


def fixed_batch(batch_size: int, device: torch.device, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a seeded batch of normal images and uniform labels of LeNet-5's input shape."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, *SPEC.input_shape, generator=generator)
    labels = torch.randint(0, SPEC.num_classes, (batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def dense_model(seed: int = SEED) -> nn.Sequential:
    """Return a freshly initialised LeNet-5 from the model registry."""
    torch.manual_seed(seed)
    return build_model(MODEL_NAME, SPEC)


def build_training_step(method_name: str, batch_size: int = 64, device: str = "cpu") -> PreparedStep:
    """Return a training step of LeNet-5 under ``method_name`` (its defaults) at ``batch_size``.

    The network is the one the sparsity phase trains (``prepare``), with the
    method's parameter groups and the suite's default optimizer (Adam, 1e-3).
    Magnitude pruning first runs its schedule's first epoch end, so the step
    carries the masks that most of its sparsity phase carries.
    """
    torch_device = torch.device(device)
    method = METHODS.get(method_name)()
    model = method.prepare(dense_model()).to(torch_device).train()
    method.on_epoch_end(model, 0, 2)
    optimizer = make_optimizer(method.param_groups(model), Optimizer())
    images, labels = fixed_batch(batch_size, torch_device)
    return PreparedStep(model, method, optimizer, images, labels, nn.CrossEntropyLoss())


@functools.lru_cache(maxsize=None)
def cached_training_step(method_name: str, batch_size: int = 64) -> PreparedStep:
    """Return one ``PreparedStep`` per process and setting on the CPU.

    The installed asv_runner reruns ``setup`` before every timed call of a
    benchmark that has one, so the expensive part is built once here.
    """
    return build_training_step(method_name, batch_size)


def build_compact_model(method_name: str, flops_fraction: float = COMPACT_FLOPS_FRACTION) -> nn.Module:
    """Return LeNet-5 pruned by ``method_name`` to ``flops_fraction`` of the dense fvcore FLOPs.

    The network is freshly initialised, ranked by the method's own scores
    (global ranking), pruned by the harness's budget search and finalised, as
    a suite's target run does after its sparsity phase. Untrained scores give
    other widths than trained ones, but the same kind of compact network.
    Dense returns the unpruned network. Magnitude pruning returns dense
    tensors with zeros, which run no faster.

    Raises:
        RuntimeError: when the budget search cannot reach ``flops_fraction``.
    """
    dense = dense_model()
    method = METHODS.get(method_name)()
    prepared = method.prepare(dense).eval()
    example = torch.zeros(1, *SPEC.input_shape)
    if method.prunes == "nothing":
        return method.finalize(method.apply(prepared, {}, example)).eval()

    dense_flops, _ = flops_fvcore(dense, SPEC.input_shape)
    search = structured_budget if method.structured else unstructured_budget
    base = method.plain(prepared) if method.structured else prepared
    result = search(method.scores(prepared), base, SPEC.input_shape, "flops", flops_fraction, dense_flops, "global")
    if result.keep is None:
        raise RuntimeError(f"{method_name} cannot prune LeNet-5 to {flops_fraction} of its FLOPs: {result.reason}")
    return method.finalize(method.apply(prepared, result.keep, example)).eval()


@functools.lru_cache(maxsize=None)
def cached_compact_model(method_name: str) -> nn.Module:
    """Return one compact model per process and method (see ``build_compact_model``)."""
    return build_compact_model(method_name)
