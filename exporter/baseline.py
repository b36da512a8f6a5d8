"""Baseline profiles: statistics of the training data, never its rows.

A profile fixes how live values are binned (quantile edges for numbers, a top-K vocabulary for
categories), so the monitor only has to count bin indices and drift is a comparison of two
count vectors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "mlmon-baseline/1"
PREDICTION = "__prediction__"
OTHER = "__other__"
MAX_KNOWN_CATEGORIES = 10_000
"""Rare training categories kept by name (not count) so they are not flagged as unexpected."""


class BaselineError(ValueError):
    """A baseline file or build request that cannot be used; the message names the field."""


def category_key(value: Any) -> str | None:
    """Canonical string of a categorical value, so 1, 1.0 and "1" are one category.

    Returns None for missing values (None, NaN).
    """
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    return str(value)


@dataclass(frozen=True)
class NumericProfile:
    """Quantile bins of a numeric feature.

    ``edges`` are the interior fine edges: value x falls in bin ``searchsorted(edges, x,
    side="left")``, so bins are right-closed and the outer bins are open-ended.
    ``coarse_starts`` are the fine-bin indices where each coarse bin begins.
    """

    name: str
    edges: np.ndarray
    fine_counts: np.ndarray
    coarse_starts: np.ndarray
    count: int
    missing_rate: float
    min: float
    max: float
    mean: float
    std: float
    kind: str = field(default="numeric", init=False)

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, values, side="left")

    def coarse_counts(self, fine: np.ndarray) -> np.ndarray:
        return np.add.reduceat(fine, self.coarse_starts, axis=-1)

    @property
    def support(self) -> tuple[float, float]:
        """Where the open tail bins are taken to end for distances along the value axis.

        The bins holding the training's extreme 1 % are closed at the training min/max, but no wider
        than their neighbouring bin: with heavy tails the extremes are far away, and spreading 1 % of
        the mass out to them turns sampling noise in the tails into a large Wasserstein distance. So
        the binned Wasserstein is a lower bound of the exact one when the tails themselves move
        (22-42 % below it on heavy-tailed data); KS, the default, has no such bias. The empty bins
        beyond the training range (``with_outer_bins``) have zero width: live values there count
        as if they sat at the range's end.
        """
        inner = self.edges[(self.edges >= self.min) & (self.edges < self.max)]
        if inner.size < 2:
            return self.min, self.max
        lo = max(self.min, inner[0] - (inner[1] - inner[0]))
        hi = min(self.max, inner[-1] + (inner[-1] - inner[-2]))
        return float(lo), float(hi)

    @property
    def robust_scale(self) -> float:
        """IQR / 1.349 from the fine-bin CDF: the std of a normal feature, but not inflated by outliers.

        Falls back to the std when half the data sits on one value (IQR 0), and to 1.0 for a
        constant feature, so Wasserstein stays finite and comparable across features.
        """
        cdf = np.cumsum(self.fine_counts) / max(1, int(self.fine_counts.sum()))
        q25, q75 = np.interp([0.25, 0.75], cdf[:-1], self.edges) if self.edges.size else (0.0, 0.0)
        iqr = float(q75 - q25)
        if iqr > 0:
            return iqr / 1.349
        return self.std if self.std > 0 else 1.0

    def coarse_labels(self) -> list[str]:
        """Readable, sortable labels: ``03 (12.3, 20.1]``."""
        bounds = np.concatenate(([-np.inf], self.edges, [np.inf]))
        ends = [*self.coarse_starts[1:], self.n_bins]
        return [f"{i:02d} ({bounds[s]:.4g}, {bounds[e]:.4g}]"
                for i, (s, e) in enumerate(zip(self.coarse_starts, ends, strict=True))]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "numeric", "count": self.count, "missing_rate": self.missing_rate,
                "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "edges": self.edges.tolist(), "fine_counts": self.fine_counts.tolist(),
                "coarse_starts": self.coarse_starts.tolist()}


@dataclass(frozen=True)
class CategoricalProfile:
    """Top-K categories with their counts; everything else shares the final ``__other__`` bin."""

    name: str
    categories: tuple[str, ...]
    counts: np.ndarray
    count: int
    missing_rate: float
    known_rare: frozenset[str] = frozenset()
    kind: str = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c: i for i, c in enumerate(self.categories)})

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1

    @property
    def fine_counts(self) -> np.ndarray:
        return self.counts

    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def lookup(self, key: str) -> int:
        return self.index.get(key, len(self.categories))

    def is_known(self, key: str) -> bool:
        return key in self.index or key in self.known_rare

    def coarse_counts(self, fine: np.ndarray) -> np.ndarray:
        return fine

    def coarse_labels(self) -> list[str]:
        return [*self.categories, OTHER]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "categorical", "count": self.count, "missing_rate": self.missing_rate,
                "categories": list(self.categories), "counts": self.counts.tolist(),
                "known_rare": sorted(self.known_rare)}


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class Baseline:
    model: str
    task: str
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None = None
    classes: tuple[str, ...] = ()
    reference_quality: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, list[float]] | None = None
    n_rows: int = 0
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "model": self.model, "task": self.task, "n_rows": self.n_rows,
            "created_at": self.created_at, "classes": list(self.classes),
            "reference_quality": self.reference_quality, "calibration": self.calibration,
            "features": {name: p.to_json() for name, p in self.features.items()},
            "prediction": self.prediction.to_json() if self.prediction else None,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def with_outer_bins(edges: np.ndarray, fine: np.ndarray, starts: np.ndarray, lo: float,
                    hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add an empty fine bin below the training minimum and one above the maximum, each its own coarse bin.

    Without them a value past the training range shares a bin with the training's extreme values,
    and a feature that was constant in training has a single bin, so no statistic can ever see it
    change. Idempotent, and applied when an older baseline file is loaded, so those files gain the
    bins without a rebuild (their training data had nothing outside [min, max], so the counts are 0).
    """
    edges, fine, starts = np.asarray(edges, np.float64), np.asarray(fine, np.int64), np.asarray(starts, np.int64)
    if edges.size == 0 or edges[0] >= lo:
        edges = np.concatenate(([np.nextafter(lo, -np.inf)], edges))
        fine = np.concatenate(([0], fine))
        starts = np.concatenate(([0], starts + 1))
    if edges[-1] < hi:
        edges = np.append(edges, hi)
        fine = np.append(fine, 0)
        starts = np.append(starts, fine.size - 1)
    return edges, fine, starts


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

    pred_profile, classes, quality = None, (), {}
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
    actual = [category_key(v) for v in target[keep]]
    predicted = [category_key(v) for v in prediction[keep]]
    classes = sorted(set(actual) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    confusion = performance.confusion_counts(
        np.array([index[a] for a in actual]), np.array([index[p] for p in predicted]), len(classes))
    metrics = performance.classification_metrics(confusion, classes)
    return {k: float(v) for k, v in metrics.items() if k in ("accuracy", "precision", "recall", "f1")}


def _load_profile(name: str, node: Any, path: str) -> FeatureProfile:
    if not isinstance(node, dict) or node.get("kind") not in ("numeric", "categorical"):
        raise BaselineError(f"{path}.kind: must be 'numeric' or 'categorical'")
    try:
        if node["kind"] == "numeric":
            edges = np.asarray(node["edges"], dtype=np.float64)
            fine = np.asarray(node["fine_counts"], dtype=np.int64)
            starts = np.asarray(node["coarse_starts"], dtype=np.int64)
            if fine.size != edges.size + 1 or np.any(np.diff(edges) <= 0):
                raise BaselineError(f"{path}.edges: must be strictly increasing with one fewer entry than fine_counts")
            if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= fine.size:
                raise BaselineError(f"{path}.coarse_starts: must start at 0 and increase within the fine bins")
            edges, fine, starts = with_outer_bins(edges, fine, starts, float(node["min"]), float(node["max"]))
            return NumericProfile(
                name=name, edges=edges, fine_counts=fine, coarse_starts=starts, count=int(node["count"]),
                missing_rate=float(node["missing_rate"]), min=float(node["min"]), max=float(node["max"]),
                mean=float(node["mean"]), std=float(node["std"]))
        cats = tuple(str(c) for c in node["categories"])
        counts = np.asarray(node["counts"], dtype=np.int64)
        if counts.size != len(cats) + 1:
            raise BaselineError(f"{path}.counts: must have one entry per category plus one for {OTHER}")
        return CategoricalProfile(
            name=name, categories=cats, counts=counts, count=int(node["count"]),
            missing_rate=float(node["missing_rate"]), known_rare=frozenset(node.get("known_rare", ())))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BaselineError):
            raise
        raise BaselineError(f"{path}: malformed profile ({type(exc).__name__}: {exc})") from exc


def baseline_from_json(data: Any, source: str = "baseline") -> Baseline:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"{source}: not an mlmon baseline (expected format {FORMAT!r})")
    feats = data.get("features")
    if not isinstance(feats, dict) or not feats:
        raise BaselineError(f"{source}: features: must be a non-empty mapping")
    features = {name: _load_profile(name, node, f"features.{name}") for name, node in feats.items()}
    pred = data.get("prediction")
    return Baseline(
        model=str(data.get("model", "")), task=str(data.get("task", "classification")), features=features,
        prediction=_load_profile(PREDICTION, pred, "prediction") if pred else None,
        classes=tuple(str(c) for c in data.get("classes") or ()),
        reference_quality={str(k): float(v) for k, v in (data.get("reference_quality") or {}).items()},
        calibration=data.get("calibration"), n_rows=int(data.get("n_rows", 0)),
        created_at=str(data.get("created_at", "")),
    )


def load_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    return baseline_from_json(data, str(path))


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
