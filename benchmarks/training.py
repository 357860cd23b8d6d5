"""The training loop every phase and every method shares.

The loop does not depend on which method it trains: the method's penalty is added to
the loss and its ``on_epoch_end`` runs after each epoch, both as plain
callables. The data order of epoch ``e`` in phase ``p`` depends only on the
seed, the phase and ``e``, so every method gets the same batches.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.config import Budget, Optimizer
from benchmarks.data import DataSplits, Split, augment_batch, batches

logger = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; ``phase`` and ``epoch`` give where."""

    def __init__(self, phase: str, epoch: int, loss: float) -> None:
        super().__init__(f"loss became {loss} in phase {phase!r} at epoch {epoch}")
        self.phase = phase
        self.epoch = epoch


class PhaseCheckpoint:
    """Storage for a phase's state after every epoch, read back after a kill.

    ``save`` receives a dict of tensors and plain values; ``load`` returns the
    last saved dict or None. Both are supplied by the caller (the results store).
    """

    def __init__(self, save: Callable[[dict], None], load: Callable[[], dict | None]) -> None:
        self.save = save
        self.load = load


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict, first recreating any pruning masks (``*_mask``) it contains."""
    from baselines import apply_masks

    masks = {key[: -len("_mask")]: value.bool() for key, value in state.items() if key.endswith("_mask")}
    if masks:
        apply_masks(model, masks)
    model.load_state_dict(state)


def _canonical_groups(model: nn.Module, groups: list[dict]) -> list[dict]:
    """Order each group's parameters by name, ``_orig`` suffixes ignored.

    torch.nn.utils.prune re-registers ``weight`` as ``weight_orig``, which
    changes the order of ``model.parameters()``. The optimizer state of a
    resumed phase lines up only when the order does not depend on that.
    """
    names = {id(p): name.replace("_orig", "") for name, p in model.named_parameters()}
    return [{**group, "params": sorted(group["params"], key=lambda p: names.get(id(p), ""))} for group in groups]


@dataclass
class PhaseResult:
    """Result of one phase: per-epoch curves and wall time."""

    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int | None = None


def phase_seed(seed: int, phase: str) -> int:
    """Return a seed for ``phase`` derived from the run seed, stable across Python processes."""
    digest = hashlib.sha256(f"{seed}:{phase}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_optimizer(groups: list[dict], settings: Optimizer) -> torch.optim.Optimizer:
    """Return the optimizer that ``settings`` names over parameter groups with an ``lr_factor`` each."""
    groups = [{**group, "lr": settings.lr * group.get("lr_factor", 1.0)} for group in groups if group["params"]]
    if settings.name == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def _learning_rate(settings: Optimizer, epoch: int, epochs: int) -> float:
    if settings.schedule == "cosine":
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if settings.schedule == "step":
        factor = 1.0
        if epoch >= 0.5 * epochs:
            factor *= 0.1
        if epoch >= 0.75 * epochs:
            factor *= 0.1
        return settings.lr * factor
    return settings.lr


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 1000) -> float:
    """Return the top-1 error in percent on ``split``, in evaluation mode."""
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        for images, labels in batches(split, batch_size, shuffle=False):
            logits = model(images.to(device, non_blocking=True))
            wrong += int((logits.argmax(1).cpu() != labels).sum())
    finally:
        model.train(was_training)
    return 100.0 * wrong / len(split)


def train_phase(
    model: nn.Module,
    data: DataSplits,
    budget: Budget,
    epochs: int,
    seed: int,
    phase: str,
    device: torch.device,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch_end: Callable[[nn.Module, int, int], None] | None = None,
    units: Callable[[nn.Module], int] | None = None,
    param_groups: list[dict] | None = None,
    select_best: bool = False,
    amp: bool = False,
    checkpoint: PhaseCheckpoint | None = None,
    loader_workers: int = 0,
) -> PhaseResult:
    """Train ``model`` in place for ``epochs`` epochs and return its curves.

    Args:
        penalty: returns the term added to the mean cross-entropy of a batch.
        on_epoch_end: called with (model, epoch, epochs) after each epoch.
        units: returns the surviving units (or non-zero weights), for the curves.
        param_groups: optimizer groups with an ``lr_factor`` each; default all
            parameters at the suite's learning rate.
        select_best: restore the weights of the epoch with the lowest
            validation error at the end (ties go to the later epoch).
        amp: use CUDA mixed precision (bfloat16 autocast).
        checkpoint: saves the phase after every epoch and resumes from the
            last saved epoch; on CPU a resumed phase equals an uninterrupted one.
        loader_workers: DataLoader worker processes for training batches (0:
            gather in this process). Batches are pinned when training on CUDA.

    Raises:
        DivergedError: when the loss becomes NaN or infinite.
    """
    result = PhaseResult()
    if epochs == 0:
        return result

    groups = param_groups or [{"params": list(model.parameters()), "lr_factor": 1.0}]
    optimizer = make_optimizer(_canonical_groups(model, groups), budget.optimizer)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(phase_seed(seed, phase))
    torch.manual_seed(phase_seed(seed, phase + ":noise"))
    best_error, best_state = math.inf, None
    first_epoch, elapsed = 0, 0.0

    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        load_model_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        result.curves = list(saved["curves"])
        best_error = saved["best_error"]
        best_state = saved["best_state"]
        result.best_epoch = saved["best_epoch"]
        first_epoch, elapsed = saved["epoch"] + 1, saved["seconds"]
        logger.info("%s: resuming after epoch %d of %d", phase, first_epoch, epochs)
    start = time.perf_counter() - elapsed

    for epoch in tqdm(range(first_epoch, epochs), desc=phase, leave=False, unit="epoch", disable=None,
                      initial=first_epoch, total=epochs):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(budget.optimizer, epoch, epochs) * group["lr_factor"]
        model.train()
        total_loss, total_penalty, seen = 0.0, 0.0, 0

        epoch_batches = batches(data.train, budget.batch_size, generator, workers=loader_workers,
                                pin_memory=device.type == "cuda")
        for step, (images, labels) in enumerate(epoch_batches):
            if budget.max_batches_per_epoch is not None and step >= budget.max_batches_per_epoch:
                break
            if data.augment:
                images = augment_batch(images, generator)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)

            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                loss = loss_fn(model(images), labels)
            extra = penalty(model) if penalty is not None else None
            objective = loss + extra if extra is not None else loss

            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()

            # Sums stay on the device; reading them every step would synchronise CUDA.
            total_loss = total_loss + loss.detach().double() * labels.numel()
            if extra is not None:
                total_penalty = total_penalty + extra.detach().double() * labels.numel()
            seen += labels.numel()

        total_loss, total_penalty = float(total_loss), float(total_penalty)
        if not (math.isfinite(total_loss) and math.isfinite(total_penalty)):
            raise DivergedError(phase, epoch, total_loss + total_penalty)

        if on_epoch_end is not None:
            on_epoch_end(model, epoch, epochs)

        val_error = evaluate(model, data.val, device)
        result.curves.append(
            {
                "phase": phase,
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                "penalty": total_penalty / max(seen, 1),
                "val_error_pct": val_error,
                "units": units(model) if units is not None else None,
                "lr": _learning_rate(budget.optimizer, epoch, epochs),
            }
        )
        logger.debug("%s epoch %d: loss %.4f, validation error %.2f %%", phase, epoch, total_loss / max(seen, 1), val_error)
        if select_best and val_error <= best_error:
            best_error, best_state = val_error, copy.deepcopy(model.state_dict())
            result.best_epoch = epoch

        if checkpoint is not None and epoch + 1 < epochs:
            checkpoint.save({
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "curves": result.curves,
                "best_error": best_error,
                "best_state": best_state,
                "best_epoch": result.best_epoch,
                "epoch": epoch,
                "seconds": time.perf_counter() - start,
            })

    if select_best and best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result
