"""Time of the forward pass of each method's compact LeNet-5 at batch 1 and 64."""

from __future__ import annotations

import torch

from .common import METHOD_NAMES, TIMING_THREADS, cached_compact_model, fixed_batch


class CompactForward:
    """Evaluation-mode forward pass under ``torch.no_grad``, single-threaded on the CPU.

    Each compact model keeps ``COMPACT_FLOPS_FRACTION`` of the dense fvcore
    FLOPs (see ``common.build_compact_model``). Dense is the unpruned network.
    NOTE: magnitude pruning keeps dense tensors with zeros, so its time matches
    the dense network's.
    """

    params = (list(METHOD_NAMES), [1, 64])
    param_names = ["method", "batch_size"]
    timeout = 120.0

    def setup(self, method: str, batch_size: int) -> None:
        torch.set_num_threads(TIMING_THREADS)
        self.model = cached_compact_model(method)
        self.images, _ = fixed_batch(batch_size, torch.device("cpu"))

    def time_forward(self, method: str, batch_size: int) -> None:
        with torch.no_grad():
            self.model(self.images)

