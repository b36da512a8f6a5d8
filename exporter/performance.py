"""Model quality, fairness and label-free estimates, computed from mergeable sums.

Ingest turns each batch of joined (prediction, label) records into small arrays of counts
and sums and adds them to the current time bucket; evaluation adds the buckets of the
window together and calls the ``*_metrics`` functions. Every metric is therefore a
function of sums, never of stored records, so memory does not grow with traffic and the
window can slide by dropping buckets. Merging buckets is plain ``+`` on these arrays.

Conventions follow scikit-learn (checked against 1.9) so that numbers on a dashboard match
what a data scientist computes offline on the same records:

* precision / recall / F1 use ``zero_division=0``; the macro average is taken over the
  classes that occur in the window (as actual or predicted), like sklearn's default
  ``labels=None``.
* log loss clips probabilities to ``[eps, 1 - eps]`` with ``eps`` the float64 machine
  epsilon (~2.2e-16): sklearn's default since 1.2 (``eps="auto"``, the dtype's epsilon; the
  parameter was removed in 1.5, and rows are no longer renormalised to sum to 1). We always
  compute in float64.
* ``brier`` is sklearn's ``brier_score_loss`` default: for two classes the mean of
  ``(y - p_positive)²`` (range [0, 1]); for three or more classes the mean over records of
  ``Σ_c (onehot_c - p_c)²`` (range [0, 2]).
* MAPE divides by ``max(|y|, eps)`` with the float64 epsilon, so ``y = 0`` gives a huge but
  finite term, exactly like ``mean_absolute_percentage_error``.

Metrics over an empty window are NaN (the exporter leaves such a gauge out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FLOAT_EPS",
    "Calibration",
    "apply_calibration",
    "classification_metrics",
    "confidence_sums",
    "confusion_counts",
    "correct_mask",
    "estimated_accuracy",
    "fairness_counts",
    "fairness_gaps",
    "fit_calibration",
    "group_rates",
    "predicted_confidence",
    "probabilistic_metrics",
    "probabilistic_sums",
    "regression_metrics",
    "regression_sums",
]

FLOAT_EPS = float(np.finfo(np.float64).eps)
"""Clip for log loss and floor for MAPE's denominator (sklearn's float64 conventions)."""

NAN = float("nan")

# Layout of the mergeable sum vectors.
PROBA_FIELDS = ("count", "log_loss_sum", "brier_sum")
REGRESSION_FIELDS = ("count", "abs_error_sum", "squared_error_sum", "abs_pct_error_sum", "error_sum")
FAIRNESS_FIELDS = ("count", "predicted_positive", "actual_positive", "true_positive")
CONFIDENCE_FIELDS = ("count", "confidence_sum")


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """num / den with 0 where den == 0 (sklearn's zero_division=0), without warnings."""
    return np.divide(num, den, out=np.zeros(np.shape(num), dtype=np.float64), where=den > 0)


def _mean(total: float, count: float) -> float:
    return float(total) / float(count) if count > 0 else NAN


# ---------------------------------------------------------------------------- classification
def confusion_counts(actual_idx: ArrayLike, predicted_idx: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """Confusion matrix (rows: actual, columns: predicted) of class indices, one bincount.

    Indices must be in ``[0, n_classes)``: the caller maps labels to indices and decides what
    an unknown class means, so that counts here always agree with the labels counter.
    """
    a = np.asarray(actual_idx, dtype=np.int64).ravel()
    p = np.asarray(predicted_idx, dtype=np.int64).ravel()
    if a.shape != p.shape:
        raise ValueError(f"actual and predicted differ in length: {a.size} vs {p.size}")
    if a.size and (min(a.min(), p.min()) < 0 or max(a.max(), p.max()) >= n_classes):
        raise ValueError(f"class index outside [0, {n_classes})")
    return np.bincount(a * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(
    confusion: ArrayLike,
    classes: Sequence[str],
    positive_class: str | None = None,
) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 (per class and averaged) from a confusion matrix.

    Returns ``accuracy``, ``precision``, ``recall``, ``f1`` (headline values), the same three
    with a ``_macro`` suffix, ``samples``, and ``per_class``: ``{class: {precision, recall, f1,
    support}}``. The headline values are those of ``positive_class`` when the caller names one
    (sklearn's ``average="binary"``, what "precision" means for e.g. churn; the matrix may carry an
    extra ``__other__`` row and column for labels outside the two classes) and the macro averages
    otherwise.
    """
    c = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    if c.shape != (k, k):
        raise ValueError(f"confusion matrix shape {c.shape} does not match {k} classes")
    total = float(c.sum())
    tp = np.diag(c)
    support = c.sum(axis=1)  # actual
    predicted = c.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2.0 * tp, support + predicted)
    present = (support + predicted) > 0
    macro = {
        name: float(values[present].mean()) if present.any() else NAN
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    out: dict[str, Any] = {
        "samples": int(total),
        "accuracy": float(tp.sum()) / total if total > 0 else NAN,
        **{f"{name}_macro": value for name, value in macro.items()},
        **macro,
        "per_class": {
            str(cls): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, cls in enumerate(classes)
        },
    }
    if positive_class is not None and positive_class in classes:
        i = list(classes).index(positive_class)
        if total > 0:
            out.update(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]))
    return out


def _as_matrix(probabilities: ArrayLike) -> NDArray[np.float64]:
    """(n, k) probabilities; a 1-D input is a binary model's positive-class (index 1) probability."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        return np.column_stack([1.0 - p, p])
    if p.ndim != 2:
        raise ValueError(f"probabilities must be 1-D or 2-D, got {p.ndim}-D")
    return p


def probabilistic_sums(probabilities: ArrayLike, actual_idx: ArrayLike) -> NDArray[np.float64]:
    """``[count, Σ log loss, Σ brier]`` over records that sent usable probabilities.

    ``probabilities`` is (n, k), or (n,) for the positive class (index 1) of a binary model.
    Records with a NaN or a value outside [0, 1] (no probabilities sent) are skipped, so
    ``count`` may be smaller than the number of joined records.
    """
    p = _as_matrix(probabilities)
    a = np.asarray(actual_idx, dtype=np.int64).ravel()
    if a.size != p.shape[0]:
        raise ValueError(f"{p.shape[0]} probability rows but {a.size} labels")
    ok = np.all((p >= 0.0) & (p <= 1.0), axis=1) & (a >= 0) & (a < p.shape[1])
    p, a = p[ok], a[ok]
    rows = np.arange(a.size)
    p_true = p[rows, a]
    log_loss = -np.log(np.clip(p_true, FLOAT_EPS, 1.0 - FLOAT_EPS))
    diff = p.copy()
    diff[rows, a] -= 1.0
    brier = np.einsum("ij,ij->i", diff, diff)
    if p.shape[1] == 2:
        brier *= 0.5  # binary: (y - p_positive)², sklearn's brier_score_loss
    return np.array([a.size, log_loss.sum(), brier.sum()], dtype=np.float64)


def probabilistic_metrics(sums: ArrayLike) -> dict[str, float]:
    """``log_loss`` and ``brier`` (means) from summed :func:`probabilistic_sums`."""
    n, log_loss, brier = np.asarray(sums, dtype=np.float64)
    return {"log_loss": _mean(log_loss, n), "brier": _mean(brier, n)}


# ---------------------------------------------------------------------------- regression
def regression_sums(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.float64]:
    """``[count, Σ|e|, Σe², Σ|e|/max(|y|, eps), Σe]`` with ``e = y_pred - y_true``.

    Records where either value is not finite are skipped.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    e = np.asarray(y_pred, dtype=np.float64).ravel() - y
    ok = np.isfinite(e)
    y, e = y[ok], e[ok]
    abs_e = np.abs(e)
    return np.array(
        [e.size, abs_e.sum(), (e * e).sum(), (abs_e / np.maximum(np.abs(y), FLOAT_EPS)).sum(), e.sum()],
        dtype=np.float64,
    )


def regression_metrics(sums: ArrayLike) -> dict[str, float]:
    """``mae``, ``rmse``, ``mape`` (a fraction, not %) and ``mean_error`` from summed sums.

    ``mean_error`` is the bias, ``mean(y_pred - y_true)``: positive when the model predicts
    too high. It is the one regression metric whose sign matters.
    """
    n, abs_e, sq_e, pct, e = np.asarray(sums, dtype=np.float64)
    return {
        "mae": _mean(abs_e, n),
        "rmse": math.sqrt(sq_e / n) if n > 0 else NAN,
        "mape": _mean(pct, n),
        "mean_error": _mean(e, n),
    }


# ---------------------------------------------------------------------------- fairness
def fairness_counts(
    group_idx: ArrayLike,
    n_groups: int,
    predicted_positive: ArrayLike,
    actual_positive: ArrayLike,
) -> NDArray[np.int64]:
    """(n_groups, 4) counts ``[n, predicted positive, actual positive, true positive]``.

    ``group_idx`` < 0 means the record had no value for the attribute; it is not counted.
    """
    g = np.asarray(group_idx, dtype=np.int64).ravel()
    pred = np.asarray(predicted_positive, dtype=bool).ravel()
    act = np.asarray(actual_positive, dtype=bool).ravel()
    if not g.size == pred.size == act.size:
        raise ValueError("group_idx, predicted_positive and actual_positive differ in length")
    if g.size and g.max() >= n_groups:
        raise ValueError(f"group index outside [0, {n_groups})")
    keep = g >= 0
    g, pred, act = g[keep], pred[keep], act[keep]
    return np.column_stack(
        [np.bincount(g[m], minlength=n_groups) for m in (np.ones(g.size, bool), pred, act, pred & act)]
    ).astype(np.int64)


def group_rates(group_stats: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-group positive rate and true-positive rate (NaN where undefined)."""
    s = np.asarray(group_stats, dtype=np.float64).reshape(-1, 4)
    n, pred_pos, act_pos, tp = s.T
    nan = np.full(n.shape, np.nan)
    positive_rate = np.divide(pred_pos, n, out=nan.copy(), where=n > 0)
    tpr = np.divide(tp, act_pos, out=nan.copy(), where=act_pos > 0)
    return positive_rate, tpr


def fairness_gaps(group_stats: ArrayLike, min_samples: int, min_positives: int = 1) -> dict[str, float]:
    """Demographic parity and equal opportunity differences: max − min rate across groups.

    Only groups with at least ``min_samples`` records take part (a gap between a group of
    10,000 and a group of 3 is noise). Equal opportunity also needs ``min_positives`` actual
    positives in a group, since its TPR is a ratio over those; raise it for rare positive
    classes. A gap is NaN when fewer than two groups qualify.
    """
    s = np.asarray(group_stats, dtype=np.float64).reshape(-1, 4)
    positive_rate, tpr = group_rates(s)
    eligible = s[:, 0] >= min_samples
    dp = positive_rate[eligible]
    eo = tpr[eligible & (s[:, 2] >= max(min_positives, 1))]
    return {
        "demographic_parity_difference": float(dp.max() - dp.min()) if dp.size >= 2 else NAN,
        "equal_opportunity_difference": float(eo.max() - eo.min()) if eo.size >= 2 else NAN,
    }


# ---------------------------------------------------------------------------- label-free estimate
def predicted_confidence(probabilities: ArrayLike, predicted_idx: ArrayLike | None = None) -> NDArray[np.float64]:
    """Probability the model gave to the class it predicted (the row max if not given).

    Pass ``predicted_idx`` when the decision is not the arg-max (e.g. a tuned threshold).
    """
    p = _as_matrix(probabilities)
    if predicted_idx is None:
        return p.max(axis=1)
    idx = np.asarray(predicted_idx, dtype=np.int64).ravel()
    return p[np.arange(idx.size), idx]


@dataclass(frozen=True)
class Calibration:
    """Monotone map confidence → expected accuracy, learned on labelled baseline data.

    Piecewise linear through ``(x[i], y[i])`` (bin mean confidence, isotonic accuracy), flat
    beyond the ends. Serialises to JSON next to the baseline profile.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Calibration:
        x, y = tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"])
        if not x or len(x) != len(y) or any(b < a for a, b in pairwise(x)):
            raise ValueError("calibration needs equally long x and y with x non-decreasing")
        return cls(x, y)


def _pool_adjacent_violators(values: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted least-squares non-decreasing fit of ``values`` (isotonic regression)."""
    # Each block: [weighted mean, total weight, number of points]. A new point that is below
    # the block before it is merged into it, and merging continues backwards while needed.
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(v)
        totals.append(w)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w_sum = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / w_sum
            totals[-2] = w_sum
            sizes[-2] += sizes[-1]
            del means[-1], totals[-1], sizes[-1]
    return np.repeat(np.array(means), sizes)


def fit_calibration(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> Calibration:
    """Learn how often the model is right at each confidence level, on baseline data.

    Why: the label-free estimate (mean confidence) is only as good as the model's
    calibration. Boosted trees and deep nets are often over-confident (say 0.95 when right
    85 % of the time), others under-confident. Confidences are cut into ``n_bins``
    equal-count bins; each bin's accuracy is made non-decreasing in confidence by pooling
    adjacent violators, so the map keeps the model's ranking and cannot invert it.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    ok_values = np.asarray(correct, dtype=np.float64).ravel()
    if conf.size != ok_values.size:
        raise ValueError("confidences and correct differ in length")
    keep = np.isfinite(conf) & np.isfinite(ok_values)
    conf, ok_values = conf[keep], ok_values[keep]
    if conf.size == 0:
        raise ValueError("no finite confidences to calibrate on")
    edges = np.unique(np.quantile(conf, np.linspace(0.0, 1.0, max(int(n_bins), 1) + 1)))
    bins = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, max(edges.size - 2, 0))
    count = np.bincount(bins).astype(np.float64)
    used = count > 0
    mean_conf = np.bincount(bins, weights=conf)[used] / count[used]
    accuracy = np.bincount(bins, weights=ok_values)[used] / count[used]
    fitted = _pool_adjacent_violators(accuracy, count[used])
    return Calibration(tuple(mean_conf.tolist()), tuple(fitted.tolist()))


def apply_calibration(calibration: Calibration, confidences: ArrayLike) -> NDArray[np.float64]:
    """Map raw confidences to calibrated expected accuracy (NaN stays NaN)."""
    conf = np.asarray(confidences, dtype=np.float64)
    return np.where(np.isfinite(conf), np.interp(conf, calibration.x, calibration.y), np.nan)


def confidence_sums(
    probabilities: ArrayLike,
    predicted_idx: ArrayLike | None = None,
    calibration: Calibration | None = None,
) -> NDArray[np.float64]:
    """``[count, Σ confidence]`` of a batch of predictions, for one time bucket.

    This needs no labels, so it covers every prediction, long before labels arrive.
    Calibration is applied per record (it is not linear, so not to the mean afterwards).
    Records without probabilities (NaN) are skipped.
    """
    conf = predicted_confidence(probabilities, predicted_idx)
    if calibration is not None:
        conf = apply_calibration(calibration, conf)
    conf = conf[np.isfinite(conf)]
    return np.array([conf.size, conf.sum()], dtype=np.float64)


def estimated_accuracy(sums: ArrayLike) -> float:
    """Expected accuracy = mean confidence in the predicted class.

    Right for a calibrated model under covariate shift (inputs move, P(label | input) does
    not). It cannot see concept drift, where the same inputs now have other labels: a gap
    between this estimate and the measured accuracy is itself the signal for that.
    """
    n, total = np.asarray(sums, dtype=np.float64)
    return _mean(total, n)


# ---------------------------------------------------------------------------- correctness SLO
def correct_mask(actual: ArrayLike, predicted: ArrayLike, tolerance: float | None = None) -> NDArray[np.bool_]:
    """Good events of a correctness SLO over joined records.

    Classification (``tolerance`` None): the prediction equals the label (class indices or
    labels). Regression: ``|predicted - actual| <= tolerance``; a non-finite value is bad.
    """
    if tolerance is None:
        return np.asarray(np.asarray(actual) == np.asarray(predicted), dtype=bool)
    err = np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        return err <= float(tolerance)
