"""Value → bin encoding and the data-quality counts it produces."""

from __future__ import annotations

import numpy as np
import pandas as pd

from exporter.baseline import build_baseline
from exporter.quality import encode, numeric_values


def test_numeric_values_flags_missing_and_type_errors():
    values, missing, wrong = numeric_values([1, 2.5, None, float("nan"), float("inf"), "3", True, {"a": 1}, 10**400])
    assert np.array_equal(missing, [0, 0, 1, 1, 1, 0, 0, 0, 1])
    assert np.array_equal(wrong, [0, 0, 0, 0, 0, 1, 0, 1, 0])
    assert values[0] == 1 and values[1] == 2.5 and values[6] == 1.0


def test_numeric_fast_path_equals_slow_path():
    rng = np.random.default_rng(0)
    col = rng.normal(size=1000).tolist()
    fast = numeric_values(col)
    slow = numeric_values([*col, "x"])
    assert np.array_equal(fast[0], slow[0][:-1]) and not slow[1].any()


def test_encode_numeric_bins_match_the_baseline_edges_and_counts_out_of_range():
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"x": rng.uniform(0, 10, 5000)})
    profile = build_baseline(train, "m").features["x"]
    enc = encode(profile, [-5.0, 0.5, 5.0, 9.99, 15.0, None, "bad"])
    assert enc.missing == 1 and enc.type_errors == 1 and enc.out_of_range == 2
    assert enc.bins.tolist() == np.searchsorted(profile.edges, [-5.0, 0.5, 5.0, 9.99, 15.0]).tolist()
    assert enc.bins[0] == 0 and enc.bins[-1] == profile.n_bins - 1


def test_encode_categorical_counts_unexpected_but_not_known_rare_categories():
    train = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["rare"] * 1})
    profile = build_baseline(train, "m", top_k=2).features["c"]
    enc = encode(profile, ["a", "b", "rare", "new", None, ["list"], 1])
    assert enc.bins.tolist() == [0, 1, 2, 2, 2]
    assert enc.unexpected == 2 and enc.missing == 1 and enc.type_errors == 1


def test_integer_and_string_categories_are_one_category():
    profile = build_baseline(pd.DataFrame({"c": [1, 2, 2, 3] * 10}), "m", categorical=("c",)).features["c"]
    enc = encode(profile, [2, "2", 2.0, True])
    assert enc.bins.tolist()[:3] == [0, 0, 0] and enc.unexpected == 1
