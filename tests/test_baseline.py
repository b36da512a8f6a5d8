"""Baseline profiles: statistics only, types inferred or forced, lossless save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import training_frame

from exporter.baseline import build_baseline
from exporter.cli import main
from exporter.profile import OTHER, BaselineError, load_baseline


def test_profiles_follow_the_data(small_baseline):
    b = small_baseline
    assert {n: p.kind for n, p in b.features.items()} == {
        "age": "numeric", "income": "numeric", "visits": "numeric", "plan": "categorical", "country": "categorical"}
    df = training_frame()
    age = b.features["age"]
    # 100 quantile bins plus an empty bin below the minimum and one above the maximum, each its own
    # coarse bin: 10 deciles and the two outer bins.
    assert age.n_bins == 102 and len(age.coarse_starts) == 12
    assert age.fine_counts[0] == 0 and age.fine_counts[-1] == 0
    assert age.edges[0] < age.min and age.edges[-1] == age.max
    assert age.fine_counts.sum() == len(df)
    assert age.mean == pytest.approx(df["age"].mean()) and age.std == pytest.approx(df["age"].std())
    assert age.min == df["age"].min() and age.max == df["age"].max()
    # quantile bins hold ~1 % each, coarse bins ~10 %
    assert np.all(np.abs(age.fine_counts[1:-1] / len(df) - 0.01) < 0.002)
    assert np.allclose(age.coarse_counts(age.fine_counts)[1:-1] / len(df), 0.1, atol=0.005)
    # a discrete feature has fewer, deduplicated edges
    assert b.features["visits"].n_bins < 20
    plan = b.features["plan"]
    assert plan.categories == ("basic", "plus", "pro") and plan.coarse_labels()[-1] == OTHER
    assert b.prediction.kind == "categorical" and b.classes == ("no", "yes")
    assert set(b.reference_quality) == {"accuracy", "precision", "recall", "f1"}
    exact = (df["prediction"] == df["target"]).mean()
    assert b.reference_quality["accuracy"] == pytest.approx(exact, abs=1e-12)


def test_missing_rate_and_types_can_be_forced():
    df = pd.DataFrame({"zip": [10115, 20095, 10115, None] * 50, "score": ["1.5", "2.5", "x", "3"] * 50})
    b = build_baseline(df, "m", categorical=("zip",), numeric=("score",))
    assert b.features["zip"].kind == "categorical" and b.features["zip"].categories[0] == "10115"
    assert b.features["zip"].missing_rate == pytest.approx(0.25)
    assert b.features["score"].kind == "numeric" and b.features["score"].missing_rate == pytest.approx(0.25)


def test_regression_baseline_stores_error_metrics():
    rng = np.random.default_rng(0)
    y = rng.normal(100, 10, 2000)
    df = pd.DataFrame({"x": rng.normal(size=2000), "pred": y + rng.normal(0, 2, 2000), "y": y})
    b = build_baseline(df, "m", prediction="pred", target="y")
    assert b.task == "regression" and b.prediction.kind == "numeric"
    assert b.reference_quality["mae"] == pytest.approx(np.mean(np.abs(df["pred"] - y)), rel=1e-12)


def test_save_load_round_trip_has_no_raw_rows(tmp_path, small_baseline):
    path = tmp_path / "b.json"
    small_baseline.save(path)
    loaded = load_baseline(path)
    for name, p in small_baseline.features.items():
        q = loaded.features[name]
        assert np.array_equal(p.fine_counts, q.fine_counts)
        if p.kind == "numeric":
            assert np.array_equal(p.edges, q.edges) and p.support == q.support
    # statistics only: the size does not grow with the rows
    big = build_baseline(training_frame(n=100_000, seed=1), "shop", prediction="prediction")
    big.save(tmp_path / "big.json")
    assert (tmp_path / "big.json").stat().st_size < 2 * path.stat().st_size
    income = set(np.round(training_frame()["income"], 6))
    stored = set(np.round(json.loads(path.read_text())["features"]["income"]["edges"], 6))
    assert len(income & stored) < 5  # interpolated quantiles, not a sample of the rows


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prediction": "nope"}, "prediction: column 'nope' is not in the data"),
    ({"categorical": ("a",), "numeric": ("a",)}, "also forced numeric"),
])
def test_bad_build_requests_name_the_field(kwargs, message):
    with pytest.raises(BaselineError, match=message):
        build_baseline(pd.DataFrame({"a": [1, 2, 3]}), "m", **kwargs)


def test_corrupt_files_are_clear_errors(tmp_path):
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(BaselineError, match="invalid JSON"):
        load_baseline(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "mlmon-baseline/1", "features": {
        "a": {"kind": "numeric", "edges": [2, 1], "fine_counts": [1, 1, 1], "coarse_starts": [0], "count": 3,
              "missing_rate": 0, "min": 0, "max": 3, "mean": 1, "std": 1}}}))
    with pytest.raises(BaselineError, match=r"features\.a\.edges: must be strictly increasing"):
        load_baseline(tmp_path / "y.json")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_baseline_command(tmp_path, capsys, suffix):
    df = training_frame(n=2000)
    data = tmp_path / f"train.{suffix}"
    df.to_csv(data, index=False) if suffix == "csv" else df.to_parquet(data)
    out = tmp_path / "shop.baseline.json"
    code = main(["baseline", "--data", str(data), "--model", "shop", "--prediction", "prediction",
                 "--target", "target", "--categorical", "visits", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    b = load_baseline(out)
    assert b.features["visits"].kind == "categorical" and "accuracy" in b.reference_quality
    assert "5 features (2 numeric, 3 categorical) from 2000 rows" in capsys.readouterr().out
    assert main(["baseline", "--data", str(tmp_path / "none.csv"), "--model", "m", "-o", str(out)]) == 1
