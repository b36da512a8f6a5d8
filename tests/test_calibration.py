"""Calibrated drift detection: null quantiles against simulation and textbook limits, false-alarm
rates at the window's n, and the blind spots of fixed thresholds (issue: drift you can trust).

Every simulation here draws the baseline afresh with each window: the baseline is a sample of the
training distribution, so the false-alarm rate of a two-sample test is a statement over both draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from exporter import calibration, drift
from exporter.baseline import build_baseline, numeric_profile
from exporter.batch import Batch
from exporter.config import DEFAULT_MIN_EFFECT, DriftConfig, ModelConfig, WindowConfig
from exporter.monitor import ModelMonitor

N = 100_000
ZIPF30 = 1 / np.arange(1, 31) ** 1.1 / np.sum(1 / np.arange(1, 31) ** 1.1)


def test_ks_null_of_fine_continuous_bins_is_close_to_kolmogorov():
    """100 equal bins: the sup over 99 points sits just below the continuous sup (Kolmogorov)."""
    null = calibration.ks_null(np.full(100, 1.0))
    for alpha in (0.05, 0.01, 1e-3, 1e-5):
        limit = stats.kstwobign.isf(alpha)
        assert 0.94 * limit < null.quantile(alpha) < limit, alpha


def test_ks_null_of_a_two_bin_feature_is_the_normal_quantile():
    """One interior boundary at t: sup |B(t)| = |N(0, t(1 - t))|, a closed form."""
    null = calibration.ks_null(np.array([300.0, 700.0]))
    for alpha in (0.05, 0.01):
        exact = stats.norm.isf(alpha / 2) * np.sqrt(0.3 * 0.7)
        assert null.quantile(alpha) == pytest.approx(exact, rel=0.03), alpha
    # The fitted Gaussian tail continues the same closed form far below the simulated range.
    assert null.quantile(1e-6) == pytest.approx(stats.norm.isf(0.5e-6) * np.sqrt(0.21), rel=0.06)


@pytest.mark.parametrize("shares", [np.array([0.5, 0.3, 0.2]), ZIPF30], ids=["3 categories", "zipf 30"])
@pytest.mark.parametrize("n", [200, 5_000, 200_000])
def test_chi_square_pvalues_are_uniform_under_the_null(shares, n):
    """Traffic in the training proportions, baseline of N = 100,000: 1,000 p-values, KS test p > 0.01,
    as the monitor computes them (categories expecting under 5 window records pooled).

    An extra slot empty on both sides (an unused ``__other__``) must not change anything."""
    rng = np.random.default_rng(n + shares.size)
    b = np.column_stack([rng.multinomial(N, shares, size=1_000), np.zeros(1_000)])
    c = np.column_stack([rng.multinomial(n, shares, size=1_000), np.zeros(1_000)])
    _, p = drift.chi_square(b, c, drift.CHI2_MIN_EXPECTED)
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_chi_square_pools_rare_categories_into_one_column_as_scipy_would_see_them():
    b = np.array([5_000, 3_000, 1_000, 150, 100, 50, 0])
    # n = 200 against N = 9,300: expected window counts 200 (c + b) / 9,500 are 108, 64, 21, 3.2, 2.2
    # and 1.1: the last three are pooled; the empty slot is not a category.
    c = np.array([110, 60, 20, 4, 3, 3, 0])
    stat, p = drift.chi_square(b, c, 5.0)
    table = np.array([[110, 60, 20, 4 + 3 + 3], [5_000, 3_000, 1_000, 150 + 100 + 50]])
    ref = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-9)
    assert drift.chi_square_dof(b, c, 5.0) == 3.0


SHAPES = {
    "normal": lambda r, n: r.normal(size=n),
    "lognormal": lambda r, n: r.lognormal(size=n),
    "poisson3": lambda r, n: r.poisson(3, size=n).astype(float),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [200, 5_000])
def test_ks_false_alarm_rate_matches_the_configured_rate(shape, n):
    """The calibrated KS threshold flags 1 % and 5 % of drift-free windows within a factor 2 (the
    acceptance band), on continuous and discrete features alike; 2,000 windows per cell."""
    rng = np.random.default_rng(7)
    gen = SHAPES[shape]
    profile = numeric_profile("x", gen(rng, N))
    truth = np.bincount(profile.bin_index(gen(rng, 2_000_000)), minlength=profile.n_bins) / 2_000_000
    null = calibration.ks_null(profile.fine_counts)
    base = rng.multinomial(N, truth, size=2_000)
    cur = rng.multinomial(n, truth, size=2_000)
    d, _ = drift.ks_from_counts(base, cur)
    root = calibration.stephens_root(calibration.effective_n(n, N))
    for alpha in (0.01, 0.05):
        rate = float(np.mean(d > null.quantile(alpha) / root))
        assert alpha / 2 <= rate <= 2 * alpha, (alpha, rate)


def _monitor(train: pd.DataFrame, **drift_cfg: object) -> ModelMonitor:
    baseline = build_baseline(train, "m")
    window = WindowConfig(window_seconds=3600, bucket_seconds=60, min_samples=200)
    return ModelMonitor(ModelConfig(name="m", window=window, drift=DriftConfig(**drift_cfg)), baseline,
                        clock=lambda: 1_000.0)


def _ingest(mon: ModelMonitor, frame: pd.DataFrame) -> None:
    features = {k: (v.tolist() if v.dtype == object else v.to_numpy()) for k, v in frame.items()}
    mon.ingest(Batch(model="m", version="v", size=len(frame), features=features))


def test_feature_constant_in_training_detects_a_change_of_value():
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"flag": np.full(20_000, 3.0), "x": rng.normal(size=20_000)})
    same = _monitor(train)
    _ingest(same, pd.DataFrame({"flag": np.full(500, 3.0), "x": rng.normal(size=500)}))
    assert same.evaluate().drifted == ()
    changed = _monitor(train)
    _ingest(changed, pd.DataFrame({"flag": np.full(500, 4.0), "x": rng.normal(size=500)}))
    ev = changed.evaluate()
    assert ev.drifted == ("flag",)
    assert next(f for f in ev.features if f.feature == "flag").scores["ks"] == 1.0


def test_outliers_in_training_do_not_hide_a_scale_change():
    """Exponential with 0.1 % huge outliers in training; live scale x1.3: KS flags it, and the robust
    Wasserstein scale (IQR) keeps the distance near its outlier-free value instead of ~0."""
    rng = np.random.default_rng(2)
    x = rng.exponential(size=100_000)
    x[:100] = 1e4
    mon = _monitor(pd.DataFrame({"x": x}))
    _ingest(mon, pd.DataFrame({"x": rng.exponential(1.3, size=2_000)}))
    fd = mon.evaluate().features[0]
    assert fd.detected is True and fd.detection == "ks"
    assert fd.scores["ks"] > fd.thresholds["ks"]
    # W of Exp(1.3) vs Exp(1) is 0.3; the robust scale of Exp(1) is ln(3) / 1.349 = 0.81. Binned, the
    # tail is clipped, so a bit lower; with the std (~320 with the outliers) it would be ~0.001.
    assert 0.2 < fd.scores["wasserstein"] < 0.5


def test_drift_free_windows_stay_quiet_and_a_half_sigma_shift_is_flagged_at_default_settings():
    rng = np.random.default_rng(4)
    cats = np.array(["a", "b", "c"])
    train = pd.DataFrame({"x": rng.normal(size=50_000), "c": rng.choice(cats, 50_000, p=[0.5, 0.3, 0.2])})
    flagged = 0
    for _ in range(20):
        mon = _monitor(train)
        _ingest(mon, pd.DataFrame({"x": rng.normal(size=1_000), "c": rng.choice(cats, 1_000, p=[0.5, 0.3, 0.2])}))
        flagged += len(mon.evaluate().drifted)
    assert flagged == 0  # 40 drift-free evaluations at a 1e-5 false-alarm rate
    mon = _monitor(train)
    _ingest(mon, pd.DataFrame({"x": rng.normal(0.5, 1, 1_000), "c": rng.choice(cats, 1_000, p=[0.5, 0.3, 0.2])}))
    assert mon.evaluate().drifted == ("x",)


def test_a_small_share_change_on_three_categories_is_detected_at_5000_records():
    rng = np.random.default_rng(5)
    cats = np.array(["a", "b", "c"])
    train = pd.DataFrame({"c": rng.choice(cats, N, p=[0.5, 0.3, 0.2])})
    hits = 0
    for _ in range(10):
        mon = _monitor(train)
        _ingest(mon, pd.DataFrame({"c": rng.choice(cats, 5_000, p=[0.45, 0.35, 0.2])}))
        hits += mon.evaluate().drifted == ("c",)
    assert hits >= 9


def test_relevance_floor_hides_a_certain_but_negligible_change():
    """0.01 sigma on a million records against a baseline of ten million: certain, negligible."""
    rng = np.random.default_rng(6)
    profile = numeric_profile("x", rng.normal(size=1_000_000))
    truth_at = stats.norm.cdf(profile.edges, loc=0.0)
    shifted_at = stats.norm.cdf(profile.edges, loc=0.01)
    big = np.diff(np.concatenate(([0.0], truth_at, [1.0]))) * 1e7
    cur = np.diff(np.concatenate(([0.0], shifted_at, [1.0]))) * 1e6
    d, p = drift.ks_from_counts(big, cur)
    assert p < 1e-6  # statistically certain ...
    assert d < DEFAULT_MIN_EFFECT["ks"]  # ... but below the floor, so never flagged


def test_thresholds_fall_with_n_and_fixed_thresholds_keep_working():
    rng = np.random.default_rng(8)
    train = pd.DataFrame({"x": rng.normal(size=20_000)})
    seen = []
    for n in (300, 3_000, 30_000):
        mon = _monitor(train)
        _ingest(mon, pd.DataFrame({"x": rng.normal(size=n)}))
        seen.append(mon.evaluate().features[0].thresholds["ks"])
    assert seen[0] > seen[1] > seen[2] >= DEFAULT_MIN_EFFECT["ks"]
    fixed = _monitor(train, thresholds={"ks": 0.3})
    _ingest(fixed, pd.DataFrame({"x": rng.normal(size=300)}))
    assert fixed.evaluate().features[0].thresholds == {"ks": 0.3}


def test_an_older_baseline_file_gains_the_outer_bins_on_load(caplog):
    """Files written before the outer bins existed keep loading, drift works, and the log says so."""
    import logging

    from exporter.profile import baseline_from_json

    rng = np.random.default_rng(9)
    new = build_baseline(pd.DataFrame({"x": rng.normal(size=5_000), "flag": np.full(5_000, 2.0)}), "m")
    old = new.to_json()
    for node in old["features"].values():  # what an older mlmon wrote: no outer bins
        node["edges"], node["fine_counts"] = node["edges"][1:-1], node["fine_counts"][1:-1]
        node["coarse_starts"] = [0, *[s - 1 for s in node["coarse_starts"][2:-1]]]
    with caplog.at_level(logging.INFO, logger="exporter.profile"):
        loaded = baseline_from_json(old, "old.baseline.json")
    assert "built by an older mlmon" in caplog.text and "rebuild it with `mlmon baseline`" in caplog.text
    for name, profile in loaded.features.items():
        np.testing.assert_array_equal(profile.edges, new.features[name].edges)
        np.testing.assert_array_equal(profile.fine_counts, new.features[name].fine_counts)
        np.testing.assert_array_equal(profile.coarse_starts, new.features[name].coarse_starts)
