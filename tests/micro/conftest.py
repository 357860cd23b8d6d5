"""Settings shared by the micro-benchmarks: one CPU thread while each one runs.

``make bench-micro`` times them (pytest-benchmark); ``make test`` passes
``--benchmark-disable``, so each benchmarked call runs once as a plain test.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run the test on one CPU thread, so timings do not depend on other load; restore the count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
