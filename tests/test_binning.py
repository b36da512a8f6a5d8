"""The grid look-up bins exactly as ``np.searchsorted(edges, x, side="left")`` (exact integers, no tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from exporter.binning import EdgeLookup


def quantile_edges(sample: np.ndarray, n: int = 100) -> np.ndarray:
    return np.quantile(sample, np.linspace(0, 1, n + 1)[1:-1])


def live_values(rng: np.random.Generator, edges: np.ndarray, n: int = 5000) -> np.ndarray:
    """Values spread over and beyond the edges, plus values exactly on edges and one ulp either side."""
    lo, hi = float(edges.min()), float(edges.max())
    pad = max(hi - lo, 1.0)
    spread = rng.uniform(lo - pad, hi + pad, n)
    on = rng.choice(edges, n)
    return np.concatenate((spread, on, np.nextafter(on, -np.inf), np.nextafter(on, np.inf),
                           [-1e300, 1e300, -np.finfo(float).max, np.finfo(float).max]))


RNG = np.random.default_rng(7)
SHAPES = {
    "normal": quantile_edges(RNG.normal(10, 3, 50_000)),
    "lognormal": quantile_edges(RNG.lognormal(1.0, 0.6, 50_000)),
    "heavy tail": quantile_edges(RNG.pareto(0.8, 50_000) * 1000),
    "poisson (repeated edges)": quantile_edges(RNG.poisson(4, 50_000).astype(float)),
    "large magnitude": quantile_edges(1e9 + RNG.normal(0, 1e3, 50_000)),
    "narrow at large magnitude": quantile_edges(1e12 + RNG.normal(0, 1e-3, 50_000)),
    "negative tiny": quantile_edges(-1e-6 * RNG.gamma(2, 1, 50_000)),
    "two points": np.array([0.0, 1.0]),
    "subnormal range": np.array([0.0, 1e-309, 2e-309, 2.2e-309]),  # found by hypothesis: scale overflowed
    "with outer edges": np.concatenate(([-5.0 - 1e-9], quantile_edges(RNG.uniform(-5, 5, 50_000)), [5.0])),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_searchsorted_on_feature_shapes(shape: str) -> None:
    edges = SHAPES[shape]
    lookup = EdgeLookup(edges)
    x = live_values(np.random.default_rng(1), edges)
    np.testing.assert_array_equal(lookup(x), np.searchsorted(edges, x, side="left"))


def test_the_usual_shapes_take_the_grid() -> None:
    """The speed-up is real only if ordinary features use the grid (heavy tails may not)."""
    for shape in ("normal", "lognormal", "poisson (repeated edges)", "large magnitude", "with outer edges"):
        assert EdgeLookup(SHAPES[shape]).uses_grid, shape
    assert not EdgeLookup(SHAPES["narrow at large magnitude"]).uses_grid


def test_non_finite_values_fall_back_to_the_binary_search() -> None:
    edges = SHAPES["normal"]
    x = np.concatenate((np.linspace(0, 20, 100), [np.nan, np.inf, -np.inf]))
    np.testing.assert_array_equal(EdgeLookup(edges)(x), np.searchsorted(edges, x, side="left"))


@settings(max_examples=300, deadline=None)
@given(
    edges=hnp.arrays(np.float64, st.integers(0, 150),
                     elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    values=hnp.arrays(np.float64, st.integers(0, 300),
                      elements=st.floats(-2e6, 2e6, allow_nan=False, allow_infinity=False)),
    repeats=st.integers(1, 4),
)
def test_matches_searchsorted_on_any_sorted_edges(edges: np.ndarray, values: np.ndarray, repeats: int) -> None:
    edges = np.sort(np.repeat(edges, repeats))
    x = np.concatenate((values, edges))  # the edges themselves are the values most likely to be misbinned
    np.testing.assert_array_equal(EdgeLookup(edges)(x), np.searchsorted(edges, x, side="left"))
