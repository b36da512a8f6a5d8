"""ModelMonitor end to end: baseline → ingest → window → evaluation, against scipy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import Clock
from scipy import stats
from scipy.spatial.distance import jensenshannon

from exporter import drift
from exporter.baseline import build_baseline
from exporter.batch import Batch
from exporter.config import DriftConfig, ModelConfig, WindowConfig
from exporter.monitor import ModelMonitor, MonitorError


def columnar(df: pd.DataFrame, version: str = "v1") -> Batch:
    return Batch(model="m", version=version, size=len(df),
                 features={c: df[c].to_numpy() if df[c].dtype.kind in "fi" else df[c].tolist() for c in df})


def monitor_for(train: pd.DataFrame, clock: Clock | None = None, **cfg: object) -> ModelMonitor:
    baseline = build_baseline(train, "m", **cfg)
    window = WindowConfig(window_seconds=3600, bucket_seconds=60, min_samples=200)
    return ModelMonitor(ModelConfig(name="m", window=window), baseline, clock or Clock())


def test_mean_shift_of_half_a_std_flags_that_feature_only():
    """One of 20 features shifted by 0.5 std, window of 5,000 records, default thresholds."""
    rng = np.random.default_rng(42)
    shapes = [lambda n, r: r.normal(0, 1, n), lambda n, r: r.lognormal(0, 0.6, n),
              lambda n, r: r.standard_t(3, n), lambda n, r: r.gamma(2.0, 2.0, n)]
    gens = {f"f{i:02d}": shapes[i % 4] for i in range(20)}
    train = pd.DataFrame({k: g(50_000, rng) for k, g in gens.items()})
    mon = monitor_for(train)
    current = pd.DataFrame({k: g(5_000, rng) for k, g in gens.items()})
    current["f07"] += 0.5 * train["f07"].std()
    mon.ingest(columnar(current))
    ev = mon.evaluate()
    assert ev.samples == 5_000
    assert ev.drifted == ("f07",)
    by_name = {f.feature: f for f in ev.features}
    assert by_name["f07"].scores["wasserstein"] > 0.3
    assert max(f.scores["wasserstein"] for f in ev.features if f.feature != "f07") < 0.08


@pytest.mark.parametrize("shape", ["normal", "skewed", "heavy"])
def test_ks_through_the_pipeline_is_within_001_of_scipy(shape):
    rng = np.random.default_rng(3)
    gen = {"normal": lambda n: rng.normal(5, 2, n), "skewed": lambda n: rng.lognormal(1, 0.9, n),
           "heavy": lambda n: rng.standard_t(2, n)}[shape]
    base = gen(20_000)
    mon = monitor_for(pd.DataFrame({"x": base}))
    for shift in (0.0, 0.3):
        cur = gen(5_000) + shift * base.std()
        mon = monitor_for(pd.DataFrame({"x": base}))
        mon.ingest(columnar(pd.DataFrame({"x": cur})))
        fd = mon.evaluate().features[0]
        assert abs(fd.scores["ks"] - stats.ks_2samp(base, cur).statistic) <= 0.01


def test_categorical_drift_equals_scipy_on_the_same_counts():
    rng = np.random.default_rng(5)
    cats = ["a", "b", "c", "d"]
    train = pd.DataFrame({"c": rng.choice(cats, 10_000, p=[0.4, 0.3, 0.2, 0.1])})
    mon = monitor_for(train)
    cur = list(rng.choice([*cats, "new"], 3_000, p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    mon.ingest(Batch(model="m", version="v", size=len(cur), features={"c": cur}))
    fd = mon.evaluate().features[0]
    profile = mon.baseline.features["c"]
    base_counts = profile.counts
    cur_counts = np.array([cur.count(c) for c in profile.categories] + [cur.count("new")])
    # Two-sample homogeneity: the baseline's empty __other__ slot is used by "new" in the window.
    ref = stats.chi2_contingency(np.stack([cur_counts, base_counts]), correction=False)
    assert fd.scores["chi2"] == pytest.approx(ref.statistic, rel=1e-12)
    assert fd.pvalues["chi2"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert fd.scores["js"] == pytest.approx(jensenshannon(base_counts / base_counts.sum(),
                                                          cur_counts / cur_counts.sum(), base=2), rel=1e-12)
    b = np.maximum(base_counts / base_counts.sum(), drift.EPS)
    c = np.maximum(cur_counts / cur_counts.sum(), drift.EPS)
    assert fd.scores["psi"] == pytest.approx(np.sum((c - b) * np.log(c / b)), rel=1e-12)
    assert fd.detected is True


def test_psi_uses_coarse_bins_of_the_baseline():
    rng = np.random.default_rng(8)
    base = rng.normal(size=20_000)
    mon = monitor_for(pd.DataFrame({"x": base}))
    cur = rng.normal(0.3, 1, 4_000)
    mon.ingest(columnar(pd.DataFrame({"x": cur})))
    fd = mon.evaluate().features[0]
    edges = mon.baseline.features["x"].edges[mon.baseline.features["x"].coarse_starts[1:] - 1]
    b = np.bincount(np.searchsorted(edges, base), minlength=10) / base.size
    c = np.bincount(np.searchsorted(edges, cur), minlength=10) / cur.size
    b, c = np.maximum(b, drift.EPS), np.maximum(c, drift.EPS)
    assert fd.scores["psi"] == pytest.approx(np.sum((c - b) * np.log(c / b)), rel=1e-9)


def test_no_drift_value_below_min_samples():
    rng = np.random.default_rng(1)
    mon = monitor_for(pd.DataFrame({"x": rng.normal(size=5_000)}))
    mon.ingest(columnar(pd.DataFrame({"x": rng.normal(3, 1, 150)})))
    fd = mon.evaluate().features[0]
    assert fd.detected is None and fd.scores == {} and fd.samples == 150


def test_window_forgets_old_buckets():
    rng = np.random.default_rng(2)
    clock = Clock()
    mon = monitor_for(pd.DataFrame({"x": rng.normal(size=5_000)}), clock)
    mon.ingest(columnar(pd.DataFrame({"x": rng.normal(3, 1, 1_000)})))
    assert mon.evaluate().drifted == ("x",)
    clock.t += 1800
    mon.ingest(columnar(pd.DataFrame({"x": rng.normal(0, 1, 1_000)})))
    assert mon.evaluate().samples == 2_000
    clock.t += 1800 + 60
    ev = mon.evaluate()
    assert ev.samples == 1_000 and ev.drifted == ()
    assert mon.snapshot().versions["v1"].predictions == 2_000  # counters never forget


def test_prediction_is_profiled_and_drift_detected():
    rng = np.random.default_rng(4)
    train = pd.DataFrame({"x": rng.normal(size=5_000), "pred": rng.choice(["a", "b"], 5_000, p=[0.8, 0.2])})
    mon = monitor_for(train, prediction="pred")
    batch = Batch(model="m", version="v", size=1_000, features={"x": rng.normal(size=1_000)},
                  predictions=[{"a": 0.3, "b": 0.7}] * 600 + ["a"] * 400)
    mon.ingest(batch)
    ev = mon.evaluate()
    pred = next(f for f in ev.features if f.feature == "__prediction__")
    assert pred.detected is True and ev.drifted == ()
    assert mon.snapshot().versions["v"].classes == {"b": 600, "a": 400}


def test_detection_method_must_fit_the_feature_kind():
    train = pd.DataFrame({"c": ["a", "b"] * 100})
    baseline = build_baseline(train, "m")
    cfg = ModelConfig(name="m", drift=DriftConfig(detection={"numeric": "wasserstein", "categorical": "ks"}))
    with pytest.raises(MonitorError, match="'ks' does not apply to categorical feature 'c'"):
        ModelMonitor(cfg, baseline)


def test_memory_is_bounded_by_the_window_not_the_traffic():
    rng = np.random.default_rng(6)
    mon = monitor_for(pd.DataFrame({f"f{i}": rng.normal(size=2_000) for i in range(5)}))
    before = mon._window.nbytes
    clock = mon.clock
    for _ in range(50):
        clock.t += 120
        mon.ingest(columnar(pd.DataFrame({f"f{i}": rng.normal(size=500) for i in range(5)})))
    assert mon._window.nbytes == before
    assert mon.evaluate().samples == 500 * 30  # a 1 h window of 2-minute steps holds 30 batches
