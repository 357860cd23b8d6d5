"""Time of fvcore's FLOP count of LeNet-5, as ``benchmarks.measure.flops_fvcore`` runs it."""

from __future__ import annotations

import torch

from benchmarks.measure import flops_fvcore

from .common import SPEC, TIMING_THREADS, dense_model


class FlopCount:
    """A fresh fvcore analysis (a TorchScript trace) of the dense network per call."""

    timeout = 120.0

    def setup(self) -> None:
        torch.set_num_threads(TIMING_THREADS)
        self.model = dense_model()

    def time_flops_fvcore_lenet5(self) -> None:
        flops_fvcore(self.model, SPEC.input_shape)
