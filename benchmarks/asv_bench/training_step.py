"""Time and memory of one training step of LeNet-5 at batch 64, per method."""

from __future__ import annotations

import torch

from .common import METHOD_NAMES, TIMING_THREADS, build_training_step, cached_training_step

BATCH_SIZE = 64


class TrainingStep:
    """Forward, loss plus the method's penalty, backward and an Adam step, single-threaded on the CPU."""

    params = list(METHOD_NAMES)
    param_names = ["method"]
    timeout = 120.0

    def setup(self, method: str) -> None:
        torch.set_num_threads(TIMING_THREADS)
        self.step = cached_training_step(method, BATCH_SIZE)

    def time_training_step(self, method: str) -> None:
        self.step()

    def peakmem_training_step(self, method: str) -> None:
        # NOTE: peakmem_ reports the process's maximum resident set size, so
        # it includes the imported libraries (torch alone is several hundred MB).
        self.step()


class CudaTrainingStep:
    """GPU memory of one training step; skipped on machines without CUDA.

    asv's ``peakmem_`` measures host memory only, so the CUDA peak is a
    ``track_`` value: ``torch.cuda.max_memory_allocated`` during one step,
    minus what is already allocated before it (weights, gradients from the
    warm-up step, optimizer state, the batch).

    NOTE: this class has only run on machines without CUDA, where asv
    reports it as skipped; its GPU path is untested.
    """

    params = list(METHOD_NAMES)
    param_names = ["method"]
    unit = "bytes"
    timeout = 120.0

    def setup(self, method: str) -> None:
        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        self.step = build_training_step(method, BATCH_SIZE, device="cuda")
        self.step()  # creates gradients and Adam's state, so the measured step is a steady one

    def track_cuda_step_peak_bytes(self, method: str) -> int:
        device = torch.device("cuda")
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        self.step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - resident)
