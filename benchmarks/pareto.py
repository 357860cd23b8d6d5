"""Pareto fronts of operating points: lower cost and lower error are both better.

A row is dominated when another row is no worse in both columns and strictly
better in at least one. Two rows with exactly the same cost and error do not
dominate each other, so both stay on the front: dropping one would hide that
two operating points (two methods, say) reach the same place.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def pareto_front(frame: pd.DataFrame, cost_column: str, error_column: str = "error_pct") -> pd.DataFrame:
    """Return the rows of ``frame`` that no other row dominates, sorted by cost, then error.

    Lower values are better in both columns. Exact duplicates (equal cost and
    equal error) are all kept. Rows with a missing (NaN) cost or error cannot
    be compared, so they are left out, with a debug log line. The original
    index and every column are kept.

    Raises:
        KeyError: when ``cost_column`` or ``error_column`` is not a column.

    Example:
        >>> points = pd.DataFrame({"flops": [1.0, 0.5, 0.5, 0.25], "error_pct": [1.0, 2.0, 3.0, 2.0]})
        >>> pareto_front(points, "flops").index.tolist()
        [3, 0]
    """
    for column in (cost_column, error_column):
        if column not in frame.columns:
            raise KeyError(f"column {column!r} not found in the frame; its columns are {list(frame.columns)}")

    valid = frame.dropna(subset=[cost_column, error_column])
    if len(valid) < len(frame):
        logger.debug("pareto_front: left out %d rows without %s or %s", len(frame) - len(valid), cost_column, error_column)
    if valid.empty:
        return valid

    cost = valid[cost_column].to_numpy(dtype=float)
    error = valid[error_column].to_numpy(dtype=float)

    # A row survives when its error is the lowest among rows of the same cost
    # and strictly lower than the lowest error at any smaller cost.
    costs, cost_group = np.unique(cost, return_inverse=True)
    best_at_cost = np.full(len(costs), np.inf)
    np.minimum.at(best_at_cost, cost_group, error)
    best_below = np.concatenate(([np.inf], np.minimum.accumulate(best_at_cost)[:-1]))
    keep = (error == best_at_cost[cost_group]) & (error < best_below[cost_group])

    order = np.lexsort((error[keep], cost[keep]))
    return valid.iloc[np.flatnonzero(keep)[order]]
