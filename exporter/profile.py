"""Baseline profiles at run time: the types the monitor bins live values with, and their loader.

Only numpy: a serving sidecar loads baselines but never builds one, so it does not pay for
pandas (``exporter.baseline`` holds the pandas builder and is imported by ``mlmon baseline``
and the demo only).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.binning import EdgeLookup

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
    edge_lookup: EdgeLookup = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge_lookup", EdgeLookup(self.edges))

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """``searchsorted(edges, values, side="left")``, through a grid look-up (exporter/binning.py)."""
        return self.edge_lookup(values)

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
    older = sorted(name for name, node in feats.items()
                   if isinstance(node, dict) and node.get("kind") == "numeric"
                   and len(node.get("edges", ())) + 1 != features[name].n_bins)
    if older:
        logging.getLogger(__name__).info(
            "%s: built by an older mlmon: numeric features %s gain an empty bin below the training minimum and "
            "one above the maximum on load (drift works as with a new baseline); rebuild it with `mlmon baseline` "
            "to store them", source, ", ".join(older))
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
