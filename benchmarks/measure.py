"""Cost measurements of a pruned network: parameters, FLOPs, activation memory, latency.

FLOPs come from fvcore, which counts one multiply-add as one flop, counts the
whole batch it is given, ignores convolution bias, counts BatchNorm in
evaluation mode as two flops per element, and treats operators it does not
know as free. Every count here is taken on a fresh analysis of the model in
evaluation mode for one input, and the operators fvcore skipped are returned
so that a record can show them.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.utils import benchmark

logger = logging.getLogger(__name__)

WEIGHTED = (nn.Linear, nn.Conv2d)


def count_params(model: nn.Module) -> int:
    """Return the number of parameters (masked entries included)."""
    return sum(p.numel() for p in model.parameters())


def _effective_weight(module: nn.Module) -> torch.Tensor:
    # A weight under torch.nn.utils.prune is ``weight_orig * weight_mask``;
    # ``module.weight`` is that product after the last forward or mask update.
    if hasattr(module, "weight_mask"):
        return module.weight_orig * module.weight_mask
    return module.weight


def count_nonzero_params(model: nn.Module) -> int:
    """Return the number of parameters that are not zero, reading masks where present."""
    total = 0
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            mask = getattr(module, name[: -len("_orig")] + "_mask", None) if name.endswith("_orig") else None
            value = param * mask if mask is not None else param
            total += int(torch.count_nonzero(value).item())
    return total


def _analysis(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCountAnalysis:
    device = next(model.parameters()).device
    example = torch.zeros(1, *input_shape, device=device)
    # A new analysis every time: fvcore caches its trace per analysis object.
    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


@dataclass
class FlopCounts:
    """fvcore's multiply-adds for one input, dense and over non-zero weights, from one trace."""

    total: int
    nonzero: int
    unsupported: dict[str, int]


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCounts:
    """Trace ``model`` once in evaluation mode and return its dense and non-zero FLOP counts.

    The non-zero count scales each Linear and Conv2d by its weights' density:
    the multiply-adds a sparse kernel would need for a masked network. For a
    network without zero weights it equals the total.
    """
    was_training = model.training
    model.eval()
    try:
        analysis = _analysis(model, input_shape)
        total = int(analysis.total())
        unsupported = dict(analysis.unsupported_ops())
        per_module = analysis.by_module()
    finally:
        model.train(was_training)

    nonzero = float(total)
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED):
            weight = _effective_weight(module)
            density = torch.count_nonzero(weight).item() / weight.numel()
            nonzero -= per_module[name] * (1.0 - density)
    return FlopCounts(total, int(round(nonzero)), unsupported)


def flops_fvcore(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """Return fvcore's multiply-add count for one input and the operators it counted as free.

    Example:
        >>> flops_fvcore(nn.Sequential(nn.Linear(3, 2)), (3,))[0]
        6
    """
    counts = count_flops(model, input_shape)
    return counts.total, counts.unsupported


def flops_nonzero(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Return fvcore's count with each Linear and Conv2d scaled by its weights' density."""
    return count_flops(model, input_shape).nonzero


@torch.no_grad()
def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Return the bytes of every leaf module's output for one input in evaluation mode.

    This is what one forward pass produces, not the peak held at once.
    """
    sizes: list[int] = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sum(sizes)


@dataclass
class Timing:
    """A latency measurement in milliseconds per forward pass of one batch."""

    batch_size: int
    median_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    # Timed blocks behind the statistics; each block runs ``passes_per_block`` forward passes.
    count: int
    passes_per_block: int
    num_threads: int
    device: str


def latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device,
    min_run_time_s: float = 0.2,
    num_threads: int = 1,
) -> Timing:
    """Time the forward pass with ``torch.utils.benchmark`` in evaluation mode under ``no_grad``.

    ``Timer`` warms up, synchronises CUDA and fixes the thread count; the
    median and interquartile range are over the timed blocks.
    """
    was_training = model.training
    model.eval()
    example = torch.randn(batch_size, *input_shape, device=device)
    timer = benchmark.Timer(
        stmt="with torch.no_grad(): model(x)",
        globals={"model": model, "x": example, "torch": torch},
        num_threads=num_threads,
    )
    try:
        # One untimed pass first: cudnn.benchmark picks kernels per new shape.
        with torch.no_grad():
            model(example)
        measurement = timer.blocked_autorange(min_run_time=min_run_time_s)
    finally:
        model.train(was_training)

    times_ms = [t * 1e3 for t in measurement.times]
    return Timing(
        batch_size=batch_size,
        median_ms=measurement.median * 1e3,
        iqr_ms=measurement.iqr * 1e3,
        mean_ms=statistics.fmean(times_ms),
        min_ms=min(times_ms),
        count=len(times_ms),
        passes_per_block=int(measurement.number_per_run),
        num_threads=num_threads,
        device=device_name(device),
    )


def peak_memory_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device) -> int | None:
    """Return the CUDA peak of one forward pass minus the memory already resident, or None off CUDA.

    ``max_memory_allocated`` counts tensors only; weights and the input are
    resident before the pass and are subtracted, so what remains is the
    activations' and workspaces' share.
    """
    if device.type != "cuda":
        return None
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(batch_size, *input_shape, device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            model(example)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - resident)
    finally:
        model.train(was_training)


def device_name(device: torch.device) -> str:
    """Return a readable name of ``device``: the GPU's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """Return the CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return "CPU: " + (platform.processor() or platform.machine())


def timing_dict(timing: Timing) -> dict:
    """Return a timing as a plain dict for a record."""
    return asdict(timing)
