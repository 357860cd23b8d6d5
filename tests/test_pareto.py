"""Tests of the Pareto front over (cost, error) operating points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.pareto import pareto_front


def dominated_by_definition(frame: pd.DataFrame, cost: str, error: str) -> list[bool]:
    """Return, per row, whether another row is <= in both columns and < in one (the plain O(n^2) rule)."""
    result = []
    for _, row in frame.iterrows():
        no_worse = (frame[cost] <= row[cost]) & (frame[error] <= row[error])
        better = (frame[cost] < row[cost]) | (frame[error] < row[error])
        result.append(bool((no_worse & better).any()))
    return result


@pytest.fixture
def points() -> pd.DataFrame:
    # a: lowest error overall, on the front.
    # b: same cost as c and a higher error, so c dominates it.
    # c: on the front.
    # d, e: exact duplicates that f dominates (lower cost, equal error).
    # f: on the front.
    # g: same cost as f and a higher error, so f dominates it.
    # h: lowest cost, on the front.
    return pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "flops_fraction": [1.00, 0.50, 0.50, 0.25, 0.25, 0.10, 0.10, 0.05],
            "error_pct": [1.0, 1.5, 1.2, 2.0, 2.0, 2.0, 3.0, 4.0],
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )


def test_front_known_answer(points):
    front = pareto_front(points, "flops_fraction")

    assert front["name"].tolist() == ["h", "f", "c", "a"]


def test_front_keeps_index_and_columns(points):
    front = pareto_front(points, "flops_fraction")

    assert front.index.tolist() == [17, 15, 12, 10]
    assert list(front.columns) == list(points.columns)


def test_equal_error_lower_cost_dominates(points):
    front = pareto_front(points, "flops_fraction")

    assert "d" not in set(front["name"])
    assert "e" not in set(front["name"])


def test_exact_duplicates_both_kept():
    frame = pd.DataFrame({"cost": [2.0, 1.0, 1.0, 0.5], "error_pct": [1.0, 2.0, 2.0, 5.0]})

    front = pareto_front(frame, "cost")

    assert front.index.tolist() == [3, 1, 2, 0]


def test_equal_cost_lower_error_dominates():
    frame = pd.DataFrame({"cost": [1.0, 1.0, 1.0], "error_pct": [3.0, 2.0, 2.5]})

    front = pareto_front(frame, "cost")

    assert front.index.tolist() == [1]


def test_custom_error_column():
    frame = pd.DataFrame({"params": [1.0, 2.0], "val_error_pct": [2.0, 1.0], "error_pct": [1.0, 2.0]})

    front = pareto_front(frame, "params", error_column="val_error_pct")

    assert front.index.tolist() == [0, 1]


def test_duplicate_index_labels():
    frame = pd.DataFrame({"cost": [1.0, 0.5, 0.5], "error_pct": [1.0, 2.0, 9.0]}, index=[0, 0, 0])

    front = pareto_front(frame, "cost")

    assert front["error_pct"].tolist() == [2.0, 1.0]


def test_missing_values_left_out():
    frame = pd.DataFrame({"cost": [1.0, np.nan, 0.5], "error_pct": [1.0, 0.1, np.nan]})

    front = pareto_front(frame, "cost")

    assert front.index.tolist() == [0]


def test_empty_frame():
    frame = pd.DataFrame({"cost": [], "error_pct": []})

    assert pareto_front(frame, "cost").empty


def test_unknown_column_raises():
    frame = pd.DataFrame({"cost": [1.0], "error_pct": [1.0]})

    with pytest.raises(KeyError, match="flops"):
        pareto_front(frame, "flops")


def test_matches_definition_on_random_grid():
    # Values on a coarse grid, so ties and duplicates occur often.
    generator = np.random.default_rng(0)
    for _ in range(20):
        frame = pd.DataFrame({
            "cost": generator.integers(0, 6, size=30).astype(float),
            "error_pct": generator.integers(0, 6, size=30).astype(float),
        })

        front = pareto_front(frame, "cost")

        expected = frame.index[[not d for d in dominated_by_definition(frame, "cost", "error_pct")]]
        assert sorted(front.index) == sorted(expected)
