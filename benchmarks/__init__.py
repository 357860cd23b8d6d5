"""The vibbench harness: models, data, methods, training, surgery, measurement, records, report."""

from __future__ import annotations

from typing import Any

__all__ = ["load_compact"]


def __getattr__(name: str) -> Any:
    # ``benchmarks.load_compact`` imports torch and the surgery only when it is used.
    if name == "load_compact":
        from benchmarks.export import load_compact

        return load_compact
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
