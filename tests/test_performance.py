"""exporter.performance agrees with scikit-learn / pandas, also when sums come from merged buckets."""

from __future__ import annotations

import math
import warnings
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from exporter import performance as perf

TOL = {"rel": 1e-9, "abs": 1e-9}


def close(value: float, expected: float) -> bool:
    return value == pytest.approx(expected, **TOL)


def split_points(rng: np.random.Generator, n: int, buckets: int = 5) -> list[slice]:
    """Uneven contiguous slices standing for the time buckets of a window."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=buckets - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in pairwise(bounds)]


@pytest.fixture(autouse=True)
def _no_warnings():
    """Metrics over empty classes/windows must not emit numpy warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def binary_data(rng: np.random.Generator, n: int = 5_000):
    p1 = rng.beta(2.0, 3.0, n)
    y = (rng.random(n) < p1).astype(int)
    pred = (p1 > 0.5).astype(int)
    return y, pred, p1


def multiclass_data(rng: np.random.Generator, n: int = 6_000, k: int = 4):
    proba = rng.dirichlet(np.full(k, 0.7), n)
    y = (proba.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    y = np.minimum(y, k - 1)
    pred = proba.argmax(axis=1)
    pred[pred == k - 1] = k - 2  # the last class is never predicted: zero_division for precision
    return y, pred, proba


def merged_confusion(rng, y, pred, k):
    return sum(confusion for confusion in (perf.confusion_counts(y[s], pred[s], k) for s in split_points(rng, y.size)))


# ---------------------------------------------------------------------------- classification
@pytest.mark.parametrize("k", [2, 4])
def test_classification_matches_sklearn_from_merged_buckets(k):
    rng = np.random.default_rng(7 + k)
    y, pred, _ = binary_data(rng) if k == 2 else multiclass_data(rng, k=k)
    classes = [str(c) for c in range(k)]
    confusion = merged_confusion(rng, y, pred, k)
    assert (confusion == skm.confusion_matrix(y, pred, labels=range(k))).all()

    m = perf.classification_metrics(confusion, classes)
    assert m["samples"] == y.size
    assert close(m["accuracy"], skm.accuracy_score(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    for i, cls in enumerate(classes):
        per = m["per_class"][cls]
        assert close(per["precision"], p[i]) and close(per["recall"], r[i]) and close(per["f1"], f[i])
        assert per["support"] == s[i]
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        expected = fn(y, pred, average="macro", zero_division=0)
        assert close(m[f"{name}_macro"], expected)
        assert close(m[name], expected)  # no positive class named: headline = macro


def test_binary_headline_uses_positive_class():
    rng = np.random.default_rng(3)
    y, pred, _ = binary_data(rng)
    m = perf.classification_metrics(perf.confusion_counts(y, pred, 2), ["0", "1"], positive_class="1")
    assert close(m["precision"], skm.precision_score(y, pred, pos_label=1))
    assert close(m["recall"], skm.recall_score(y, pred, pos_label=1))
    assert close(m["f1"], skm.f1_score(y, pred, pos_label=1))
    m0 = perf.classification_metrics(perf.confusion_counts(y, pred, 2), ["0", "1"], positive_class="0")
    assert close(m0["f1"], skm.f1_score(y, pred, pos_label=0))
    assert close(m0["f1_macro"], skm.f1_score(y, pred, average="macro"))


def test_macro_over_classes_present_like_sklearn_default():
    # Class "4" never occurs (neither actual nor predicted); class "3" is only ever actual.
    rng = np.random.default_rng(11)
    y, pred, _ = multiclass_data(rng, k=4)
    m = perf.classification_metrics(perf.confusion_counts(y, pred, 5), [str(c) for c in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert close(m["f1_macro"], skm.f1_score(y, pred, average="macro", zero_division=0))
        assert close(m["precision_macro"], skm.precision_score(y, pred, average="macro", zero_division=0))
        assert close(m["recall_macro"], skm.recall_score(y, pred, average="macro", zero_division=0))
    assert m["per_class"]["4"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["3"]["precision"] == 0.0  # never predicted: zero_division=0


def test_empty_window_is_nan_without_warnings():
    m = perf.classification_metrics(np.zeros((3, 3), dtype=np.int64), ["a", "b", "c"], positive_class="a")
    assert m["samples"] == 0
    assert all(math.isnan(m[k]) for k in ("accuracy", "precision", "recall", "f1", "f1_macro"))
    assert all(math.isnan(v) for v in perf.probabilistic_metrics(np.zeros(3)).values())
    assert all(math.isnan(v) for v in perf.regression_metrics(np.zeros(5)).values())
    assert math.isnan(perf.estimated_accuracy(np.zeros(2)))


def test_confusion_rejects_out_of_range_and_mismatched_lengths():
    with pytest.raises(ValueError):
        perf.confusion_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        perf.confusion_counts([0, -1], [0, 1], 3)
    with pytest.raises(ValueError):
        perf.confusion_counts([0, 1], [0], 3)
    assert perf.confusion_counts([], [], 2).tolist() == [[0, 0], [0, 0]]


# ---------------------------------------------------------------------------- log loss, Brier
def test_binary_log_loss_and_brier_match_sklearn_from_merged_buckets():
    rng = np.random.default_rng(21)
    y, _, p1 = binary_data(rng)
    p1[:3] = [0.0, 1.0, 1.0]  # exercises the clipping: a confident miss costs -log(eps)
    y[:3] = [1, 0, 1]
    sums = sum(perf.probabilistic_sums(p1[s], y[s]) for s in split_points(rng, y.size))
    m = perf.probabilistic_metrics(sums)
    assert sums[0] == y.size
    assert close(m["log_loss"], skm.log_loss(y, p1))
    assert close(m["brier"], skm.brier_score_loss(y, p1))
    # The same model given as a two-column matrix gives the same numbers.
    m2 = perf.probabilistic_metrics(perf.probabilistic_sums(np.column_stack([1 - p1, p1]), y))
    assert close(m2["log_loss"], m["log_loss"]) and close(m2["brier"], m["brier"])


def test_multiclass_log_loss_and_brier_match_sklearn_from_merged_buckets():
    rng = np.random.default_rng(22)
    y, _, proba = multiclass_data(rng, k=4)
    proba[0] = [1.0, 0.0, 0.0, 0.0]
    y[0] = 2
    sums = sum(perf.probabilistic_sums(proba[s], y[s]) for s in split_points(rng, y.size))
    m = perf.probabilistic_metrics(sums)
    assert close(m["log_loss"], skm.log_loss(y, proba, labels=range(4)))
    assert close(m["brier"], skm.brier_score_loss(y, proba, labels=range(4)))


def test_records_without_probabilities_are_skipped():
    proba = np.array([[0.7, 0.3], [np.nan, np.nan], [0.2, 0.8]])
    y = np.array([0, 1, 1])
    sums = perf.probabilistic_sums(proba, y)
    assert sums[0] == 2
    m = perf.probabilistic_metrics(sums)
    assert close(m["log_loss"], skm.log_loss(y[[0, 2]], proba[[0, 2]]))


# ---------------------------------------------------------------------------- regression
@pytest.mark.parametrize("with_zeros", [False, True])
def test_regression_matches_sklearn_from_merged_buckets(with_zeros):
    rng = np.random.default_rng(31)
    n = 5_000
    y = rng.normal(50.0, 10.0, n)
    if with_zeros:
        y[rng.choice(n, 25, replace=False)] = 0.0
    else:
        assert (y != 0).all()
    y_pred = y + rng.normal(1.5, 4.0, n)
    sums = sum(perf.regression_sums(y[s], y_pred[s]) for s in split_points(rng, n))
    m = perf.regression_metrics(sums)
    assert close(m["mae"], skm.mean_absolute_error(y, y_pred))
    assert close(m["rmse"], skm.root_mean_squared_error(y, y_pred))
    assert close(m["mape"], skm.mean_absolute_percentage_error(y, y_pred))
    assert close(m["mean_error"], float(np.mean(y_pred - y)))
    if with_zeros:
        assert m["mape"] > 1e12  # the eps denominator: huge but finite, as in sklearn


def test_regression_skips_non_finite():
    sums = perf.regression_sums([1.0, np.nan, 3.0], [2.0, 5.0, np.inf])
    assert sums.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------- fairness
def fairness_data(rng: np.random.Generator, n: int = 20_000):
    groups = np.array(["a", "b", "c", "d", "e"])
    g = rng.choice(5, n, p=[0.4, 0.3, 0.2, 0.095, 0.005])  # "e" is tiny
    actual = rng.random(n) < np.array([0.3, 0.4, 0.5, 0.3, 0.5])[g]
    tpr, fpr = np.array([0.8, 0.7, 0.6, 0.9, 0.1]), np.array([0.1, 0.2, 0.15, 0.3, 0.9])
    predicted = rng.random(n) < np.where(actual, tpr[g], fpr[g])
    return groups, g, predicted, actual


@pytest.mark.parametrize("min_samples", [1, 150, 2_000])
def test_fairness_gaps_match_pandas_groupby(min_samples):
    rng = np.random.default_rng(41)
    groups, g, predicted, actual = fairness_data(rng)
    stats = sum(perf.fairness_counts(g[s], len(groups), predicted[s], actual[s]) for s in split_points(rng, g.size))
    gaps = perf.fairness_gaps(stats, min_samples=min_samples)

    df = pd.DataFrame({"group": groups[g], "pred": predicted, "actual": actual})
    per = df.groupby("group").agg(n=("pred", "size"), positive_rate=("pred", "mean"))
    per["tpr"] = df[df.actual].groupby("group")["pred"].mean()
    per = per[per.n >= min_samples]
    assert close(gaps["demographic_parity_difference"], per.positive_rate.max() - per.positive_rate.min())
    assert close(gaps["equal_opportunity_difference"], per.tpr.max() - per.tpr.min())
    if min_samples == 150:  # the tiny group, with the most extreme rates, is left out
        assert "e" not in per.index and len(per) == 4


def test_fairness_needs_two_groups_and_ignores_missing_group():
    stats = perf.fairness_counts([0, 0, 1, -1], 2, [1, 0, 1, 1], [1, 1, 0, 1])
    assert stats.tolist() == [[2, 1, 2, 1], [1, 1, 0, 0]]
    gaps = perf.fairness_gaps(stats, min_samples=2)
    assert math.isnan(gaps["demographic_parity_difference"])
    assert math.isnan(gaps["equal_opportunity_difference"])
    # Group 1 has no actual positive: its TPR is undefined, so only parity has two groups.
    gaps = perf.fairness_gaps(stats, min_samples=1)
    assert gaps["demographic_parity_difference"] == 0.5
    assert math.isnan(gaps["equal_opportunity_difference"])
    rates, tpr = perf.group_rates(stats)
    assert rates.tolist() == [0.5, 1.0] and tpr[0] == 0.5 and math.isnan(tpr[1])


# ---------------------------------------------------------------------------- label-free estimate
def logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def simulated_model(rng: np.random.Generator, n: int, sharpness: float = 1.0):
    """Features x, the true P(y=1 | x), and a model reporting it (over-confident if sharpness > 1)."""
    x = rng.uniform(-1.0, 1.0, (n, 2))
    true_p = logistic(3.0 * x[:, 0] + 2.0 * x[:, 1])
    reported = logistic(sharpness * (3.0 * x[:, 0] + 2.0 * x[:, 1]))
    return x, true_p, reported


def test_estimate_tracks_accuracy_of_a_calibrated_model_and_misses_concept_drift():
    rng = np.random.default_rng(51)
    n = 40_000
    x, true_p, reported = simulated_model(rng, n)
    y = (rng.random(n) < true_p).astype(int)
    pred = (reported > 0.5).astype(int)
    sums = sum(perf.confidence_sums(reported[s]) for s in split_points(rng, n))
    estimate = perf.estimated_accuracy(sums)
    realised = float(np.mean(pred == y))
    assert abs(estimate - realised) < 0.02

    # Concept drift: for x0 > 0 the world flips its labels. Inputs (and so confidences) are
    # unchanged, the estimate stays put while accuracy collapses.
    drifted = np.where(x[:, 0] > 0.0, 1 - y, y)
    realised_drifted = float(np.mean(pred == drifted))
    assert realised - realised_drifted > 0.2
    assert estimate - realised_drifted > 0.1


def test_calibration_corrects_an_over_confident_model():
    rng = np.random.default_rng(61)
    n = 30_000
    _, true_p, reported = simulated_model(rng, n, sharpness=3.0)
    y = (rng.random(n) < true_p).astype(int)
    pred = (reported > 0.5).astype(int)
    conf = perf.predicted_confidence(reported, pred)
    calibration = perf.fit_calibration(conf, pred == y, n_bins=10)
    assert np.all(np.diff(calibration.y) >= 0)
    assert perf.Calibration.from_dict(calibration.to_dict()) == calibration

    # Production traffic from the same world, fresh draws.
    _, true_p2, reported2 = simulated_model(rng, n, sharpness=3.0)
    y2 = (rng.random(n) < true_p2).astype(int)
    realised = float(np.mean((reported2 > 0.5) == y2))
    raw = perf.estimated_accuracy(perf.confidence_sums(reported2))
    calibrated = perf.estimated_accuracy(perf.confidence_sums(reported2, calibration=calibration))
    assert raw - realised > 0.05  # over-confident
    assert abs(calibrated - realised) < abs(raw - realised) / 3
    assert abs(calibrated - realised) < 0.02


def test_pool_adjacent_violators_matches_isotonic_regression():
    rng = np.random.default_rng(71)
    values = rng.random(200) + np.linspace(0.0, 1.0, 200)
    weights = rng.integers(1, 50, 200).astype(float)
    ours = perf._pool_adjacent_violators(values, weights)
    reference = IsotonicRegression().fit_transform(np.arange(200), values, sample_weight=weights)
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)


def test_calibration_edge_cases():
    one_level = perf.fit_calibration(np.full(50, 0.9), np.r_[np.ones(40), np.zeros(10)])
    assert one_level.y == (0.8,)
    assert perf.apply_calibration(one_level, [0.1, 0.99]).tolist() == [0.8, 0.8]
    assert np.isnan(perf.apply_calibration(one_level, [np.nan]))[0]
    with pytest.raises(ValueError):
        perf.fit_calibration([], [])
    with pytest.raises(ValueError):
        perf.Calibration.from_dict({"x": [0.5, 0.4], "y": [0.1, 0.2]})


def test_predicted_confidence_follows_the_decision():
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert perf.predicted_confidence(proba).tolist() == [0.6, 0.5]
    assert perf.predicted_confidence(proba, [2, 1]).tolist() == [0.3, 0.2]
    assert perf.predicted_confidence(np.array([0.3, 0.9])).tolist() == pytest.approx([0.7, 0.9])
    # A tuned threshold of 0.25 predicts positive at p=0.3: confidence is 0.3, not 0.7.
    assert perf.predicted_confidence(np.array([0.3]), [1]).tolist() == pytest.approx([0.3])


# ---------------------------------------------------------------------------- correctness SLO
def test_correct_mask():
    assert perf.correct_mask(["a", "b", "c"], ["a", "c", "c"]).tolist() == [True, False, True]
    assert perf.correct_mask([1, 2], [1, 1]).tolist() == [True, False]
    good = perf.correct_mask([10.0, 10.0, 10.0, 10.0], [10.5, 12.0, np.nan, 9.0], tolerance=1.0)
    assert good.tolist() == [True, False, False, True]
