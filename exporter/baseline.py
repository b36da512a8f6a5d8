"""Building a baseline from training data (pandas): statistics of the data, never its rows.

A profile fixes how live values are binned (quantile edges for numbers, a top-K vocabulary for
categories), so the monitor only has to count bin indices and drift is a comparison of two
count vectors. The profile types and the loader live in :mod:`exporter.profile`, which the
server imports without pandas; this module is for ``mlmon baseline``, the demo and tests.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exporter.profile import (
    MAX_KNOWN_CATEGORIES,
    PREDICTION,
    Baseline,
    BaselineError,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    category_key,
    with_outer_bins,
)

__all__ = [
    "Baseline",
    "BaselineError",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "build_baseline",
    "categorical_profile",
    "numeric_profile",
    "read_table",
    "reference_quality",
]


def numeric_profile(name: str, values: np.ndarray, fine_bins: int = 100, coarse_bins: int = 10) -> NumericProfile:
    """Profile a numeric column; non-finite values count as missing."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise BaselineError(f"features.{name}: no finite values to profile")
    qs = np.linspace(0.0, 1.0, fine_bins + 1)[1:-1]
    edges = np.unique(np.quantile(finite, qs))
    # An edge equal to the maximum would leave the top bin empty by construction.
    edges = edges[edges < finite.max()]
    fine = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    n_fine = len(edges) + 1
    starts = np.unique(np.floor(np.linspace(0, n_fine, min(coarse_bins, n_fine) + 1)[:-1]).astype(np.int64))
    edges, fine, starts = with_outer_bins(edges, fine, starts, float(finite.min()), float(finite.max()))
    return NumericProfile(
        name=name, edges=edges, fine_counts=fine.astype(np.int64), coarse_starts=starts,
        count=int(finite.size), missing_rate=float(1 - finite.size / values.size),
        min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
    )


def categorical_profile(name: str, values: Any, top_k: int = 50) -> CategoricalProfile:
    keys = pd.Series([category_key(v) for v in values], dtype=object)
    present = keys.dropna()
    if present.empty:
        raise BaselineError(f"features.{name}: no values to profile")
    freq = present.value_counts(sort=True)
    top = freq.iloc[:top_k]
    rare = freq.index[top_k:top_k + MAX_KNOWN_CATEGORIES]
    counts = np.append(top.to_numpy(dtype=np.int64), int(freq.iloc[top_k:].sum()))
    return CategoricalProfile(
        name=name, categories=tuple(str(c) for c in top.index), counts=counts,
        count=int(present.size), missing_rate=float(1 - present.size / len(keys)),
        known_rare=frozenset(str(c) for c in rare),
    )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def build_baseline(
    df: pd.DataFrame,
    model: str,
    *,
    prediction: str | None = None,
    target: str | None = None,
    confidence: str | None = None,
    categorical: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    task: str | None = None,
    fine_bins: int = 100,
    coarse_bins: int = 10,
    top_k: int = 50,
) -> Baseline:
    """Profile every column of ``df`` except the prediction, target and excluded ones.

    Types are inferred from the pandas dtype (numbers → numeric, anything else → categorical)
    and can be forced with ``categorical`` / ``numeric``.
    """
    if df.empty:
        raise BaselineError("data: the training data has no rows")
    for col, role in [(prediction, "prediction"), (target, "target"), (confidence, "confidence"),
                      *((c, "categorical") for c in categorical), *((c, "numeric") for c in numeric)]:
        if col is not None and col not in df.columns:
            columns = ", ".join(map(str, df.columns))
            raise BaselineError(f"{role}: column {col!r} is not in the data (columns: {columns})")
    if set(categorical) & set(numeric):
        raise BaselineError(f"categorical: {sorted(set(categorical) & set(numeric))} also forced numeric")
    if fine_bins < coarse_bins or coarse_bins < 2:
        raise BaselineError("fine_bins: must be at least coarse_bins, and coarse_bins at least 2")
    if confidence is not None and (prediction is None or target is None):
        raise BaselineError("confidence: needs --prediction and --target to learn the calibration")
    skip = {prediction, target, confidence, *exclude}
    features: dict[str, FeatureProfile] = {}
    for col in df.columns:
        name = str(col)
        if col in skip:
            continue
        series = df[col]
        if col in numeric:
            series = pd.to_numeric(series, errors="coerce")
        if col not in categorical and (col in numeric or _is_numeric(series)):
            features[name] = numeric_profile(name, series.to_numpy(dtype=np.float64, na_value=np.nan),
                                             fine_bins, coarse_bins)
        else:
            features[name] = categorical_profile(name, series.to_numpy(dtype=object), top_k)
    if not features:
        raise BaselineError("data: no feature columns left to profile")

    pred_profile: FeatureProfile | None = None
    classes: tuple[str, ...] = ()
    quality: dict[str, float] = {}
    if prediction is not None:
        pred = df[prediction]
        if task is None:
            task = "regression" if _is_numeric(pred) and not _all_integral(pred) else "classification"
        if task == "regression":
            pred_profile = numeric_profile(PREDICTION, pred.to_numpy(dtype=np.float64, na_value=np.nan),
                                           fine_bins, coarse_bins)
        else:
            pred_profile = categorical_profile(PREDICTION, pred.to_numpy(dtype=object), top_k)
            classes = tuple(sorted({k for k in map(category_key, pred) if k is not None}))
        if target is not None:
            quality = reference_quality(df[target], pred, task)
    calibration = None
    if confidence is not None and task == "classification":
        calibration = _calibration(df[confidence], df[target], df[prediction])
    return Baseline(
        model=model, task=task or "classification", features=features, prediction=pred_profile,
        classes=classes, reference_quality=quality, calibration=calibration, n_rows=len(df),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _all_integral(series: pd.Series) -> bool:
    values = series.dropna().to_numpy(dtype=np.float64)
    return bool(np.all(values == np.round(values)))


def _calibration(confidence: pd.Series, target: pd.Series, prediction: pd.Series) -> dict[str, list[float]]:
    """Confidence → observed accuracy on the baseline, so the label-free estimate is honest
    for a model that is over- or under-confident."""
    from exporter import performance

    conf = pd.to_numeric(confidence, errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(conf) & target.notna().to_numpy() & prediction.notna().to_numpy()
    if keep.sum() < 100:
        raise BaselineError("confidence: needs at least 100 rows with confidence, prediction and target")
    correct = np.array([category_key(a) == category_key(p) for a, p in zip(target[keep], prediction[keep],
                                                                              strict=True)])
    return performance.fit_calibration(conf[keep], correct).to_dict()


def reference_quality(target: pd.Series, prediction: pd.Series, task: str) -> dict[str, float]:
    """Quality of the model on the baseline data: the reference that thresholds are relative to."""
    from exporter import performance

    keep = target.notna() & prediction.notna()
    if not keep.any():
        return {}
    if task == "regression":
        y = target[keep].to_numpy(dtype=np.float64)
        p = prediction[keep].to_numpy(dtype=np.float64)
        return performance.regression_metrics(performance.regression_sums(y, p))
    # notna() above leaves no value whose key is None; "" stands in for the impossible case.
    actual = [category_key(v) or "" for v in target[keep]]
    predicted = [category_key(v) or "" for v in prediction[keep]]
    classes = sorted(set(actual) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    confusion = performance.confusion_counts(
        np.array([index[a] for a in actual]), np.array([index[p] for p in predicted]), len(classes))
    metrics = performance.classification_metrics(confusion, classes)
    return {k: float(v) for k, v in metrics.items() if k in ("accuracy", "precision", "recall", "f1")}


def read_table(path: str | Path) -> pd.DataFrame:
    """Training data from CSV or Parquet (by extension)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise BaselineError(f"{path}: cannot read ({exc})") from exc
    raise BaselineError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
