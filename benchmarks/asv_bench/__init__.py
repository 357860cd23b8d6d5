"""The asv benchmark suite of vibbench (see docs/benchmarks.md).

asv imports this folder as a top-level package named ``asv_bench``. The
wheel leaves it out (``exclude = ["benchmarks.asv*"]`` in pyproject.toml),
so an installed vibbench does not contain it.
"""
