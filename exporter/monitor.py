"""``ModelMonitor``: the state of one monitored model.

Ingest only turns values into bin indices and adds count vectors to the current time bucket
(O(records × features), numpy). ``evaluate()`` compares the window with the baseline
(O(features × bins), independent of traffic) and publishes an immutable ``Evaluation``
that the metrics collector reads without touching the ingest path.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter import calibration, drift
from exporter.batch import Batch, Rejection, all_strings
from exporter.binning import EdgeLookup
from exporter.config import ModelConfig
from exporter.limits import safe_label
from exporter.outcomes import LabelResult, OutcomeCounters, OutcomeTracker, QualityEvaluation, meets
from exporter.profile import (
    OTHER,
    PREDICTION,
    Baseline,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    category_key,
)
from exporter.quality import NumericBlock, encode, encode_numeric_block
from exporter.slots import Slots
from exporter.window import BucketRing

NUMERIC_METHODS = ("psi", "js", "kl", "ks", "wasserstein")
CATEGORICAL_METHODS = ("psi", "js", "kl", "chi2")
QUALITY_CHECKS = ("missing", "type_errors", "out_of_range", "unexpected")
RECENT_SHARE = 0.1
"""Share of the false-alarm rate spent on the recent window when both windows are tested. A clear
shift crosses the recent window's threshold fast whatever its share (the threshold grows only with
sqrt(log 1/alpha)); the full window keeps 90 %, so its power stays within a point of a test that
spends the whole rate on it (bench/detection.py)."""
HEALTH_WEIGHTS = {"quality": 0.4, "drift": 0.3, "data_quality": 0.15, "slo": 0.15}


class MonitorError(ValueError):
    """The model's config and baseline do not fit together."""


def methods_for(profile: FeatureProfile) -> tuple[str, ...]:
    return NUMERIC_METHODS if isinstance(profile, NumericProfile) else CATEGORICAL_METHODS


@dataclass(frozen=True)
class _NumericBins:
    """What only numeric groups have: fine edges, value support and robust spread per row (Wasserstein)."""

    edges: np.ndarray
    support: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True)
class _DriftGroup:
    """Features with one bin layout, stacked as rows; baseline side and null quantiles precomputed once."""

    profiles: list[FeatureProfile]
    index: np.ndarray
    methods: tuple[str, ...]
    detections: list[str]
    base_fine: np.ndarray
    base_coarse: np.ndarray
    base_n: np.ndarray
    numeric: _NumericBins | None
    coarse_dof: np.ndarray
    fixed: np.ndarray
    """Per row: the configured fixed threshold of its detection method, NaN for ``auto``."""
    min_effect: np.ndarray
    alpha: np.ndarray
    """Per row: the false-alarm rate per evaluation, spent on the full window alone when the recent
    window is below min_samples, else split between the two (Bonferroni, ``RECENT_SHARE``)."""
    null: dict[str, np.ndarray]
    """Per row, by budget (``alone``, ``full``, ``recent``): the null quantile of sqrt(n_eff) * statistic
    at that share of alpha (KS, Wasserstein), else NaN."""
    fleet_critical: np.ndarray
    """Per row: chi-square critical values on the exported coarse bins, (rows, 2) for (full, recent)."""
    fleet_min_effect: np.ndarray


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    samples: int
    scores: dict[str, float]
    pvalues: dict[str, float]
    thresholds: dict[str, float]
    """The threshold in force for the detection method at this window's n (empty below min_samples)."""
    detection: str
    detected: bool | None
    """None when the full window holds fewer than ``min_samples`` values of this feature (the recent
    window, part of it, then holds fewer too)."""
    recent_samples: int = 0
    recent_score: float | None = None
    recent_threshold: float | None = None
    min_effect: float = 0.0
    fleet_critical: tuple[float, float] = (float("nan"), float("nan"))
    """Chi-square critical values on the coarse bins for the fleet rules: (full, recent) window."""
    fleet_min_effect: float = 0.0
    """Relevance floor of the fleet chi-square, as Cohen's w."""


@dataclass(frozen=True)
class Evaluation:
    """Immutable result of one evaluation; replaced whole, never mutated."""

    timestamp: float
    duration_seconds: float
    samples: int
    min_samples: int
    features: tuple[FeatureDrift, ...]
    quality: QualityEvaluation | None = None
    health: float = float("nan")
    health_components: dict[str, float] = field(default_factory=dict)

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.detected and f.feature != PREDICTION)


@dataclass
class VersionStats:
    first_seen: float
    predictions: int = 0
    errors: int = 0
    latency_buckets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    latency_sum: float = 0.0
    last_seen: float = 0.0
    classes: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    rejected: list[Rejection]
    problems: dict[str, int]
    """Data-quality counts of this batch (missing, type_errors, out_of_range, unexpected, unknown_features)."""


@dataclass(frozen=True)
class PreparedBatch:
    """A batch encoded against the baseline (``ModelMonitor.prepare``), ready to be added to the
    state (``ModelMonitor.apply``): numbers and the few per-record values the label join needs."""

    size: int
    version: str
    ids: list[str | None] | None
    pred_keys: list[Any] | None
    pred_class: np.ndarray | None
    """The outcome tracker's class index per record, when the prediction's bins give it."""
    proba: np.ndarray | None
    groups: dict[str, list[Any]]
    vector: np.ndarray
    quality: np.ndarray
    unknown: list[str]
    unknown_values: int
    lat_counts: np.ndarray
    latency_sum: float
    errors: int
    slo_add: dict[str, tuple[int, int]]
    classes: Counter[str]
    rejected: list[Rejection]


@dataclass(frozen=True)
class FeatureCounts:
    """One feature (or the prediction) as a scrape shows it: coarse bins, data quality, drift threshold."""

    feature: str
    kind: str
    bins: tuple[str, ...]
    counts: tuple[int, ...]
    """Cumulative values per coarse bin since start."""
    baseline_ratio: tuple[float, ...]
    data_quality: dict[str, int] | None
    """Counts per ``QUALITY_CHECKS`` entry; None for the prediction, which is not a feature."""
    baseline_samples: int
    """Baseline rows with a value: N of the two-sample tests (baseline counts = ratio × N)."""


@dataclass(frozen=True)
class SLOCounts:
    name: str
    events: int
    bad: int
    objective: float
    threshold_seconds: float | None


@dataclass(frozen=True)
class OutcomeSnapshot:
    """The label join and its settings; absent when the model cannot be scored (no class list)."""

    counters: OutcomeCounters
    pending: int
    class_names: tuple[str, ...]
    reference_quality: dict[str, float]
    quality_thresholds: dict[str, float]
    fairness_thresholds: dict[str, float]
    stale_after_seconds: float


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape or a status request reads about one model, copied under the lock in O(bins)."""

    model: str
    versions: dict[str, VersionStats]
    latency_bounds: tuple[float, ...]
    features: tuple[FeatureCounts, ...]
    unknown_features: int
    unknown_feature_names: tuple[str, ...]
    rejected: dict[str, int]
    data_quality_thresholds: dict[str, float]
    stale_after_seconds: float
    window_samples: int
    window_min_samples: int
    export_bins: bool
    """Whether the per-bin series are exported (``drift.export_bins``)."""
    slos: tuple[SLOCounts, ...]
    outcomes: OutcomeSnapshot | None
    evaluation: Evaluation | None
    limit_hits: dict[str, int] = field(default_factory=dict)
    bin_rows: tuple[tuple[str, str], ...] = ()
    """``(feature, bin)`` of every coarse bin, features in order: the same object in every snapshot."""
    bin_counts: tuple[int, ...] = ()
    """Cumulative count per entry of ``bin_rows`` (what ``features[i].counts`` hold, flat)."""
    bin_baseline_ratio: tuple[float, ...] = ()
    """Baseline ratio per entry of ``bin_rows``: the same object in every snapshot."""


class ModelMonitor:
    def __init__(self, config: ModelConfig, baseline: Baseline, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.baseline = baseline
        self.clock = clock
        self.name = config.name
        profiles: list[FeatureProfile] = list(baseline.features.values())
        if baseline.prediction is not None:
            profiles.append(baseline.prediction)
        self.profiles = tuple(profiles)
        self.feature_index = {p.name: i for i, p in enumerate(self.profiles)}
        self.numeric_features = frozenset(n for n, p in baseline.features.items() if isinstance(p, NumericProfile))
        """Features a request may deliver as float64 arrays (exporter/formats/fastjson.py, arrow.py)."""
        self.categorical_features = frozenset(n for n, p in baseline.features.items()
                                              if isinstance(p, CategoricalProfile))
        """Features an Arrow request may deliver as ``Coded`` columns (exporter/formats/arrow.py)."""
        self._check_drift_config()
        sizes = np.array([p.n_bins for p in self.profiles], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(sizes)))
        # Numeric features whose values a grid bins are encoded together, in one block.
        self._block_rows = [i for i, p in enumerate(self.profiles) if p.name != PREDICTION
                            and isinstance(p, NumericProfile) and p.edge_lookup.uses_grid]
        self._in_block = frozenset(self._block_rows)
        self._block = NumericBlock.of([self.profiles[i] for i in self._block_rows],  # type: ignore[misc]
                                      [int(self.offsets[i]) for i in self._block_rows])
        self._window_slos = [s for s in config.slos if s.type in ("latency", "availability")]
        # The window vector: bins of every profile, the record count, window sums of data-quality
        # problems, then (events, bad) per request SLO; the health score reads the last two as rates.
        self._slots = Slots(bins=int(self.offsets[-1]), records=1, data_quality=len(QUALITY_CHECKS),
                            slo=2 * len(self._window_slos))
        self._records = self._slots.records.start
        win = config.window
        now = clock()
        self._window = BucketRing(self._slots.width, win.n_buckets, win.bucket_seconds, now)
        self.outcomes = OutcomeTracker(config, baseline, now)
        # The prediction's categories and, when the class list is fixed, their class indices: a
        # batch's predicted classes then come from its prediction bins.
        pred = baseline.prediction if isinstance(baseline.prediction, CategoricalProfile) else None
        self._pred_categories = pred.categories if pred is not None else ()
        self._pred_other = len(self._pred_categories)
        index = self.outcomes.class_index if self.outcomes.enabled and not self.outcomes.regression else None
        self._pred_to_class = None if pred is None or index is None or not index.frozen else \
            np.array([index.get(c) for c in self._pred_categories] + [index.other], dtype=np.int64)
        # Buckets of the recent window tested beside the full one (0: off, or as long as the window).
        recent = round(config.drift.recent_window_seconds / win.bucket_seconds)
        self._recent_buckets = recent if 0 < recent < win.n_buckets else 0
        self._groups = self._drift_groups()
        self._cumulative = np.zeros(self._slots.bins.stop, dtype=np.int64)
        self._data_quality = np.zeros((len(self.profiles), len(QUALITY_CHECKS)), dtype=np.int64)
        self._baseline_ratio = [self._ratio(p) for p in self.profiles]
        # Per profile, what every snapshot repeats: bin labels and baseline size (the same objects
        # each time, so the exposition cache can key on them).
        self._coarse_labels = [tuple(p.coarse_labels()) for p in self.profiles]
        self._baseline_samples = [int(p.fine_counts.sum()) for p in self.profiles]
        # Every profile's coarse bins in one reduceat over the cumulative vector (a coarse bin is a
        # run of fine bins; a categorical bin is one fine bin).
        self._coarse_starts = np.concatenate([
            self.offsets[i] + (p.coarse_starts if isinstance(p, NumericProfile) else np.arange(p.n_bins))
            for i, p in enumerate(self.profiles)]).astype(np.intp)
        self._coarse_ends = np.cumsum([len(labels) for labels in self._coarse_labels]).tolist()
        self._bin_rows = tuple((p.name, label) for p, labels in zip(self.profiles, self._coarse_labels, strict=True)
                               for label in labels)
        self._bin_baseline_ratio = tuple(r for ratios in self._baseline_ratio for r in ratios)
        self._unknown_features = 0
        self.unknown_feature_names: list[str] = []
        self._versions: dict[str, VersionStats] = {}
        self._rejected: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        """Times a cap in ``limits`` was hit, by cap (exported as mlmon_limit_hits_total)."""
        self.retired_versions = 0
        self._slo = {s.name: [0, 0] for s in config.slos}
        self._latency_bounds = np.asarray(config.latency_buckets, dtype=np.float64)
        self._latency_bucket = EdgeLookup(self._latency_bounds)
        self._lock = threading.Lock()
        self._evaluation: Evaluation | None = None
        self.started_at = now

    @staticmethod
    def _ratio(profile: FeatureProfile) -> tuple[float, ...]:
        base = profile.coarse_counts(profile.fine_counts)
        total = base.sum()
        return tuple((base / total).tolist()) if total else (0.0,) * base.size

    def _check_drift_config(self) -> None:
        cfg = self.config.drift
        problems = []
        for p in self.profiles:
            method = cfg.detection_for(p.name, p.kind)
            if method not in methods_for(p):
                problems.append(f"models[{self.name}].drift: detection method {method!r} does not apply to "
                                f"{p.kind} feature {p.name!r} (use one of {', '.join(methods_for(p))})")
        unknown = set(cfg.features) - set(self.feature_index)
        if unknown:
            problems.append(f"models[{self.name}].drift.features: {', '.join(sorted(unknown))} not in the baseline")
        if problems:
            raise MonitorError("\n".join(problems))

    # ---- ingest -------------------------------------------------------------------------

    def _prediction_keys(self, predictions: list[Any]) -> list[Any]:
        """The predicted class per record (classification) or the raw value (regression)."""
        if self.baseline.task == "regression" or all_strings(predictions):
            return predictions
        classes = self.baseline.classes
        out = []
        for p in predictions:
            if isinstance(p, dict):
                p = max(p, key=p.__getitem__)
            elif isinstance(p, list):
                i = int(np.argmax(p))
                p = classes[i] if i < len(classes) else str(i)
            out.append(category_key(p))
        return out

    def _class_label(self, key: str, stats: VersionStats) -> str:
        profile = self.baseline.prediction
        if isinstance(profile, CategoricalProfile):
            return key if profile.lookup(key) < len(profile.categories) else OTHER
        if key in stats.classes:
            return key
        if safe_label(key, self.config.limits.max_label_length) is None:
            self.limit_hits["max_label_length"] += 1
            return OTHER
        if len(stats.classes) < self.config.limits.max_classes:
            return key
        self.limit_hits["max_classes"] += 1
        return OTHER

    def _version(self, version: str) -> str:
        """The batch's version as a label value: over-long or unencodable versions share ``__other__``."""
        if safe_label(version, self.config.limits.max_label_length) is not None:
            return version
        with self._lock:
            self.limit_hits["max_label_length"] += 1
        return OTHER

    def _group_values(self, groups: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Over-long group values share ``__other__`` (the count of distinct groups is capped downstream)."""
        cap = self.config.limits.max_label_length
        out = {}
        for name, values in groups.items():
            if any(isinstance(v, str) and safe_label(v, cap) is None for v in values):
                values = [OTHER if isinstance(v, str) and safe_label(v, cap) is None else v for v in values]
                with self._lock:
                    self.limit_hits["max_label_length"] += 1
            out[name] = values
        return out

    def _retire_oldest_version(self) -> None:
        """Called under the lock when a new version would exceed ``limits.max_versions``."""
        oldest = min(self._versions, key=lambda v: self._versions[v].last_seen)
        del self._versions[oldest]
        self.retired_versions += 1
        self.limit_hits["max_versions"] += 1

    def ingest(self, batch: Batch, now: float | None = None) -> IngestResult:
        """Add a parsed batch: :meth:`prepare` then :meth:`apply`."""
        return self.apply(self.prepare(batch), now)

    def prepare(self, batch: Batch) -> PreparedBatch:
        """Everything about a batch that depends only on the baseline and the config: encoding,
        data quality, the count vector. Pure, so it may run in another process (exporter/offload.py)."""
        n = batch.size
        quality = np.zeros_like(self._data_quality)
        pred_keys = None if batch.predictions is None else self._prediction_keys(batch.predictions)
        columns = [pred_keys if profile.name == PREDICTION else batch.features.get(profile.name)
                   for profile in self.profiles]
        parts: list[np.ndarray] = []
        pred_bins = None  # the prediction's categorical bin per record, when every record has one
        if self._block_rows:
            block_columns = [columns[i] for i in self._block_rows]
            bins, quality[self._block_rows] = encode_numeric_block(self._block, block_columns, n)
            parts.append(bins)
        for i, profile in enumerate(self.profiles):
            column = columns[i]
            if i in self._in_block or (column is None and profile.name == PREDICTION):
                continue
            if column is None:
                quality[i, 0] += n
                continue
            enc = encode(profile, column)
            quality[i] = (enc.missing, enc.type_errors, enc.out_of_range, enc.unexpected)
            if enc.bins.size:
                parts.append(enc.bins + self.offsets[i])
            if profile.name == PREDICTION and isinstance(profile, CategoricalProfile) and enc.bins.size == n:
                pred_bins = enc.bins
        unknown = [name for name in batch.features if name not in self.feature_index]
        unknown_values = sum(sum(v is not None for v in batch.features[name]) for name in unknown)
        parts.append(np.full(n, self._records, dtype=np.int64))
        vector = np.bincount(np.concatenate(parts), minlength=self._window.width)
        vector[self._slots.data_quality] = quality[:len(self.baseline.features)].sum(axis=0)

        latency = batch.latency_seconds
        reported = latency[np.isfinite(latency)]
        lat_counts = np.bincount(self._latency_bucket(reported),
                                 minlength=self._latency_bounds.size + 1)
        slo_add = self._slo_events(batch, reported)
        if self._window_slos:
            vector[self._slots.slo] = np.ravel([slo_add[slo.name] for slo in self._window_slos])
        classes: Counter[str] = Counter()
        if pred_keys is not None and self.baseline.task != "regression":
            if pred_bins is not None:
                classes = self._class_counts(pred_keys, pred_bins)
            else:
                classes.update(pred_keys)
                classes.pop(None, None)  # type: ignore[call-overload]
        proba = pred_class = None
        if pred_keys is not None and batch.predictions is not None and self.outcomes.enabled:
            proba = self.outcomes.probabilities(batch.predictions)
            if pred_bins is not None and self._pred_to_class is not None:
                pred_class = self._pred_to_class.take(pred_bins)
                for i in np.flatnonzero(pred_bins == self._pred_other).tolist():  # classes beyond the profile's
                    pred_class[i] = self.outcomes.class_index.get(pred_keys[i])
        return PreparedBatch(
            size=n, version=batch.version, ids=batch.ids, pred_keys=pred_keys, pred_class=pred_class, proba=proba,
            groups=batch.groups,
            vector=vector, quality=quality, unknown=unknown, unknown_values=unknown_values, lat_counts=lat_counts,
            latency_sum=float(reported.sum()), errors=int(np.count_nonzero(batch.error)), slo_add=slo_add,
            classes=classes, rejected=batch.rejected)

    def _class_counts(self, pred_keys: list[Any], pred_bins: np.ndarray) -> Counter[str]:
        """Predicted classes counted from their bins (one bincount, not a hash per record); the
        few beyond the profile's categories by name."""
        counts = np.bincount(pred_bins, minlength=self._pred_other + 1).tolist()
        names = self._pred_categories
        classes = Counter({names[b]: c for b, c in enumerate(counts[:-1]) if c})
        if counts[-1]:
            classes.update(pred_keys[i] for i in np.flatnonzero(pred_bins == self._pred_other).tolist())
        return classes

    def apply(self, p: PreparedBatch, now: float | None = None) -> IngestResult:
        """Add a prepared batch to the state: the label join first, then the counters under the lock."""
        now = self.clock() if now is None else now
        n = p.size
        version = self._version(p.version)
        if p.pred_keys is not None:
            self.outcomes.observe(p.ids, version, p.pred_keys, p.proba, self._group_values(p.groups), now,
                                  p.pred_class)
        vector, quality = p.vector, p.quality
        with self._lock:
            self._window.add(now, vector)
            self._cumulative += vector[self._slots.bins]
            self._data_quality += quality
            self._unknown_features += p.unknown_values
            self._remember_unknown(p.unknown)
            if p.rejected:
                self._rejected["invalid_record"] += len(p.rejected)
            for name, (events, bad) in p.slo_add.items():
                self._slo[name][0] += events
                self._slo[name][1] += bad
            if n:
                stats = self._versions.get(version)
                if stats is None:
                    if len(self._versions) >= self.config.limits.max_versions:
                        self._retire_oldest_version()
                    stats = self._versions[version] = VersionStats(
                        first_seen=now, latency_buckets=np.zeros(self._latency_bounds.size + 1, dtype=np.int64))
                stats.predictions += n
                stats.errors += p.errors
                stats.latency_buckets += p.lat_counts
                stats.latency_sum += p.latency_sum
                stats.last_seen = now
                for key, count in p.classes.items():
                    stats.classes[self._class_label(key, stats)] += count
        feature_rows = quality[:len(self.baseline.features)]  # the prediction, last, is not a feature
        problems = dict(zip(QUALITY_CHECKS, feature_rows.sum(axis=0).tolist(), strict=True))
        problems["unknown_features"] = p.unknown_values
        return IngestResult(accepted=n, rejected=p.rejected, problems=problems)

    def _remember_unknown(self, names: list[str]) -> None:
        """Called under the lock: keep a bounded list of unknown names, each a safe label."""
        limits = self.config.limits
        for name in names:
            if name in self.unknown_feature_names:
                continue
            if safe_label(name, limits.max_label_length) is None:
                self.limit_hits["max_label_length"] += 1
            elif len(self.unknown_feature_names) < limits.max_unknown_feature_names:
                self.unknown_feature_names.append(name)
            else:
                self.limit_hits["max_unknown_feature_names"] += 1

    def _slo_events(self, batch: Batch, reported_latency: np.ndarray) -> dict[str, tuple[int, int]]:
        out = {}
        for slo in self.config.slos:
            if slo.type == "availability":
                out[slo.name] = (batch.size, int(np.count_nonzero(batch.error)))
            elif slo.type == "latency":
                out[slo.name] = (reported_latency.size, int(np.count_nonzero(reported_latency > slo.threshold_seconds)))
        return out

    def ingest_labels(self, ids: list[Any], labels: list[Any], now: float | None = None,
                      positions: Sequence[int] | None = None) -> LabelResult:
        """Join ground truth to pending predictions; invalid labels are refused alone."""
        result = self.outcomes.ingest_labels(ids, labels, self.clock() if now is None else now, positions)
        if result.rejected:
            self.count_rejected("invalid_label", len(result.rejected))
        return result

    def count_rejected(self, reason: str, count: int = 1) -> None:
        """Records refused before they reached a batch (oversized body, unknown model, ...)."""
        with self._lock:
            self._rejected[reason] += count

    # ---- evaluation ---------------------------------------------------------------------

    def window_counts(self, now: float | None = None) -> np.ndarray:
        now = self.clock() if now is None else now
        with self._lock:
            return self._window.total(now)

    def evaluate(self, now: float | None = None) -> Evaluation:
        """Compare the window with the baseline and publish the result."""
        started = time.perf_counter()
        now = self.clock() if now is None else now
        with self._lock:
            counts = self._window.total(now)
            recent = self._window.recent(now, self._recent_buckets) if self._recent_buckets else None
        min_samples = self.config.window.min_samples
        by_name = {fd.feature: fd for g in self._groups
                   for fd in self._group_drift(g, counts, recent, min_samples)}
        results = [by_name[p.name] for p in self.profiles]
        quality = self.outcomes.evaluate(now) if self.outcomes.enabled else None
        components = self._health_components(counts, results, quality)
        weight = sum(HEALTH_WEIGHTS[k] for k in components)
        health = sum(HEALTH_WEIGHTS[k] * v for k, v in components.items()) / weight if weight else float("nan")
        evaluation = Evaluation(
            timestamp=now, duration_seconds=time.perf_counter() - started,
            samples=int(counts[self._records]), min_samples=min_samples, features=tuple(results),
            quality=quality, health=health, health_components=components)
        self._evaluation = evaluation
        return evaluation

    def _health_components(self, counts: np.ndarray, drifts: list[FeatureDrift],
                           quality: QualityEvaluation | None) -> dict[str, float]:
        """Each input of the health score in [0, 1]; an input without data is left out (README)."""
        out: dict[str, float] = {}
        thresholds = self.outcomes.thresholds(self.baseline)
        if quality is not None and quality.labelled and thresholds:
            latest = max(quality.labelled, key=quality.labelled.__getitem__)
            values = quality.per_version[latest]
            checks = [meets(m, values[m], t) for m, t in thresholds.items() if np.isfinite(values.get(m, np.nan))]
            if checks:
                out["quality"] = sum(checks) / len(checks)
        features = [d for d in drifts if d.feature != PREDICTION and d.detected is not None]
        if features:
            out["drift"] = 1 - sum(bool(d.detected) for d in features) / len(features)
        records = counts[self._records]
        if records:
            rate = counts[self._slots.data_quality].sum() / (records * max(1, len(self.baseline.features)))
            out["data_quality"] = float(1 - min(1.0, rate / self.config.data_quality.max_missing_ratio))
        burns = []
        for slo, (events, bad) in zip(self._window_slos, counts[self._slots.slo].reshape(-1, 2), strict=True):
            if events:
                burns.append(bad / events / (1 - slo.objective))
        if burns:
            # 1 while the error budget burns no faster than sustainable, 0 at a 10x burn rate.
            out["slo"] = float(np.mean([np.clip(1 - (b - 1) / 9, 0, 1) for b in burns]))
        return out

    def _drift_groups(self) -> list[_DriftGroup]:
        """Features that share a bin layout, so each statistic runs once per group (O(bins) numpy).

        Null quantiles are simulated here, once per feature (``calibration``), so an evaluation only
        scales them by the window's n.
        """
        by_layout: dict[tuple[Any, ...], list[int]] = {}
        for i, p in enumerate(self.profiles):
            layout = (p.kind, p.n_bins, tuple(p.coarse_starts.tolist()) if isinstance(p, NumericProfile) else ())
            by_layout.setdefault(layout, []).append(i)
        cfg = self.config.drift
        share = {"alone": 1.0, "full": 1.0 - RECENT_SHARE, "recent": RECENT_SHARE}
        groups = []
        for members in by_layout.values():
            profiles = [self.profiles[i] for i in members]
            first = profiles[0]
            detections = [cfg.detection_for(p.name, p.kind) for p in profiles]
            methods = tuple(m for m in methods_for(first) if m in cfg.methods or m in detections)
            base = np.stack([p.fine_counts for p in profiles]).astype(np.float64)
            index = np.stack([np.arange(self.offsets[i], self.offsets[i + 1]) for i in members])
            numeric = [p for p in profiles if isinstance(p, NumericProfile)]  # all of them or none
            coarse = first.coarse_counts(base) if numeric else base
            fixed = [cfg.threshold_for(p.name, m) for p, m in zip(profiles, detections, strict=True)]
            alpha = np.array([cfg.false_alarm_rate_for(p.name) for p in profiles])
            nulls = [self._null(p, m, base[r], [alpha[r] * share[k] for k in share])
                     for r, (p, m) in enumerate(zip(profiles, detections, strict=True))]
            coarse_dof = np.maximum((coarse > 0).sum(axis=1) - 1, 1)
            groups.append(_DriftGroup(
                profiles=profiles, index=index, methods=methods, detections=detections,
                base_fine=base, base_coarse=coarse, base_n=base.sum(axis=1),
                numeric=_NumericBins(edges=np.stack([p.edges for p in numeric]),
                                     support=np.array([p.support for p in numeric]).T,
                                     scale=np.array([p.robust_scale for p in numeric])) if numeric else None,
                coarse_dof=coarse_dof, fixed=np.array([np.nan if f is None else f for f in fixed]),
                min_effect=np.array([cfg.min_effect_for(p.name, m) for p, m in zip(profiles, detections, strict=True)]),
                alpha=alpha, null={k: np.array([n[j] for n in nulls]) for j, k in enumerate(share)},
                fleet_critical=np.stack([calibration.chi2_critical(alpha * share["full"], coarse_dof),
                                         calibration.chi2_critical(alpha * share["recent"], coarse_dof)], axis=1),
                fleet_min_effect=np.array([cfg.min_effect_for(p.name, "chi2") for p in profiles])))
        return groups

    def _null(self, profile: FeatureProfile, method: str, base: np.ndarray,
              alphas: list[float]) -> list[float]:
        """Null quantiles of sqrt(n_eff) * statistic for methods calibrated by simulation; NaN otherwise."""
        if self.config.drift.threshold_for(profile.name, method) is not None:
            return [math.nan] * len(alphas)
        if method == "ks":
            null = calibration.ks_null(base)
        elif method == "wasserstein" and isinstance(profile, NumericProfile):
            lo, hi = profile.support
            bounds = np.clip(np.concatenate(([lo], profile.edges, [hi])), lo, hi)
            null = calibration.wasserstein_null(base, np.diff(bounds), profile.robust_scale)
        else:
            return [math.nan] * len(alphas)
        return [null.quantile(a) for a in alphas]

    def _scores(self, g: _DriftGroup, current: np.ndarray,
                methods: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        numeric = g.numeric
        coarse = g.profiles[0].coarse_counts(current) if numeric else current
        scores: dict[str, np.ndarray] = {}
        pvalues: dict[str, np.ndarray] = {}
        for method in methods:
            if method == "psi":
                scores[method] = np.asarray(drift.psi(g.base_coarse, coarse))
            elif method == "js":
                scores[method] = np.asarray(drift.js_distance(g.base_coarse, coarse))
            elif method == "kl":
                scores[method] = np.asarray(drift.kl_divergence(g.base_coarse, coarse))
            elif method == "ks":
                score, p = drift.ks_from_counts(g.base_fine, current)
                scores[method], pvalues[method] = np.asarray(score), np.asarray(p)
            elif method == "chi2":
                score, p = drift.chi_square(g.base_fine, current, drift.CHI2_MIN_EXPECTED)
                scores[method], pvalues[method] = np.asarray(score), np.asarray(p)
            elif method == "wasserstein" and numeric is not None:
                lo, hi = numeric.support
                scores[method] = np.asarray(drift.wasserstein_from_counts(
                    numeric.edges, g.base_fine, current, lo, hi, numeric.scale))
        return scores, pvalues

    def _thresholds(self, g: _DriftGroup, current: np.ndarray, n: np.ndarray, split: np.ndarray,
                    window: str) -> np.ndarray:
        """The threshold in force per row for its detection method at the window's n.

        ``auto``: the null quantile at this n, raised to the relevance floor. Fixed: as configured
        (for chi2 a p-value, turned into the statistic it corresponds to, so every method compares
        ``score > threshold``). Vectorised per method: an evaluation runs this for every group twice.
        """
        n_eff = calibration.effective_n(n, g.base_n)
        share = (1.0 - RECENT_SHARE) if window == "full" else RECENT_SHARE
        alpha = np.where(split, g.alpha * share, g.alpha)
        null = np.where(split, g.null[window], g.null["alone"])
        auto = ~np.isfinite(g.fixed)
        thr = g.fixed.copy()
        floor = g.min_effect.copy()
        methods = np.asarray(g.detections)
        for method in set(g.detections):
            rows = methods == method
            if method == "chi2":
                dof = np.asarray(drift.chi_square_dof(g.base_fine[rows], current[rows], drift.CHI2_MIN_EXPECTED))
                thr[rows] = calibration.chi2_critical(np.where(auto[rows], alpha[rows], g.fixed[rows]), dof)
                floor[rows] = n_eff[rows] * g.min_effect[rows] ** 2
                auto_here = rows
            else:
                auto_here = rows & auto
                if method == "ks":
                    thr[auto_here] = null[auto_here] / calibration.stephens_root(n_eff[auto_here])
                elif method == "wasserstein":
                    thr[auto_here] = null[auto_here] / np.sqrt(np.maximum(n_eff[auto_here], 1e-12))
                else:
                    thr[auto_here] = calibration.coarse_threshold(method, alpha[auto_here], g.coarse_dof[auto_here],
                                                                  n_eff[auto_here])
            # The floor applies to auto thresholds only; a fixed one is what the user asked for.
            floor_here = auto_here & auto
            thr[floor_here] = np.maximum(thr[floor_here], floor[floor_here])
        return thr

    def _group_drift(self, g: _DriftGroup, counts: np.ndarray, recent_counts: np.ndarray | None,
                     min_samples: int) -> list[FeatureDrift]:
        current = counts[g.index].astype(np.float64)
        samples = current.sum(axis=1)
        scores, pvalues = self._scores(g, current, g.methods)
        r_samples = np.zeros_like(samples)
        r_scores: dict[str, np.ndarray] = {}
        r_thresholds = np.full(samples.shape, np.nan)
        if recent_counts is not None:
            recent = recent_counts[g.index].astype(np.float64)
            r_samples = recent.sum(axis=1)
        both = (r_samples >= min_samples) & (samples >= min_samples)
        if recent_counts is not None and (r_samples >= min_samples).any():
            r_scores, _ = self._scores(g, recent, tuple(sorted(set(g.detections))))
            r_thresholds = self._thresholds(g, recent, r_samples, both, "recent")
        thresholds = self._thresholds(g, current, samples, both, "full")
        out = []
        for r, profile in enumerate(g.profiles):
            n, rn, detection = int(samples[r]), int(r_samples[r]), g.detections[r]
            # The recent window is part of the full one: below min_samples there, nothing is judged.
            judged = n >= min_samples
            recent_ok = judged and recent_counts is not None and rn >= min_samples
            r_score = float(r_scores[detection][r]) if recent_ok else None
            r_thr = float(r_thresholds[r]) if recent_ok else None
            thr = float(thresholds[r])
            row_scores = {m: float(v[r]) for m, v in scores.items()} if judged else {}
            detected = (bool(row_scores[detection] > thr) or bool(recent_ok and r_scores[detection][r] > r_thr)
                        if judged else None)
            out.append(FeatureDrift(
                profile.name, profile.kind, n, row_scores,
                {m: float(v[r]) for m, v in pvalues.items()} if judged else {},
                {detection: thr} if judged else {}, detection, detected, rn, r_score, r_thr,
                float(g.min_effect[r]), (float(g.fleet_critical[r, 0]), float(g.fleet_critical[r, 1])),
                float(g.fleet_min_effect[r])))
        return out

    @property
    def evaluation(self) -> Evaluation | None:
        return self._evaluation

    # ---- checkpoints --------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint's arrays depend on: a checkpoint with another fingerprint cannot load."""
        bins = json.dumps([p.to_json() for p in self.profiles], sort_keys=True, default=str).encode()
        return {"features": [[p.name, p.kind, p.n_bins] for p in self.profiles], "width": self._slots.width,
                "bins_sha256": hashlib.sha256(bins).hexdigest(),
                "n_buckets": self._window.n_buckets, "bucket_seconds": self._window.bucket_seconds,
                "classes": list(self.outcomes.classes), "attributes": list(self.outcomes.attributes)}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Window, quality windows, pending predictions and version first-seen times; cumulative
        counters restart from zero as Prometheus expects."""
        with self._lock:
            arrays = {f"window/{k}": v.copy() for k, v in self._window.state().items()}
            versions = {v: [s.first_seen, s.last_seen] for v, s in self._versions.items()}
        outcome_arrays, outcome_meta = self.outcomes.state()
        arrays.update({f"outcomes/{k}": v for k, v in outcome_arrays.items()})
        return arrays, {"versions": versions, "outcomes": outcome_meta}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Load ``state()`` output, then evaluate at once so the last evaluation is back before serving."""
        with self._lock:
            self._window.restore({k: arrays[f"window/{k}"] for k in ("buckets", "total", "epoch")})
            for v, (first, last) in meta["versions"].items():
                self._versions[v] = VersionStats(first_seen=float(first), last_seen=float(last),
                                                 latency_buckets=np.zeros(self._latency_bounds.size + 1,
                                                                          dtype=np.int64))
        self.outcomes.restore({k[len("outcomes/"):]: v for k, v in arrays.items() if k.startswith("outcomes/")},
                              meta["outcomes"])
        self.evaluate()

    # ---- reading ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Counters copied under the lock; settings resolved here so readers never touch the config."""
        now = self.clock()
        with self._lock:
            versions = {
                v: VersionStats(first_seen=s.first_seen, predictions=s.predictions, errors=s.errors,
                                latency_buckets=s.latency_buckets.copy(), latency_sum=s.latency_sum,
                                last_seen=s.last_seen, classes=Counter(s.classes))
                for v, s in self._versions.items()}
            cumulative = self._cumulative.copy()
            data_quality = self._data_quality.copy()
            unknown, unknown_names = self._unknown_features, tuple(self.unknown_feature_names)
            rejected = dict(self._rejected)
            request_slo = {k: (e, b) for k, (e, b) in self._slo.items()}
            limit_hits = dict(self.limit_hits)
            window_samples = int(self._window.total(now)[self._records])
        cfg = self.config
        coarse = tuple(np.add.reduceat(cumulative, self._coarse_starts).tolist())
        features = []
        start = 0
        for i, profile in enumerate(self.profiles):
            end = self._coarse_ends[i]
            features.append(FeatureCounts(
                feature=profile.name, kind=profile.kind, bins=self._coarse_labels[i],
                counts=coarse[start:end], baseline_ratio=self._baseline_ratio[i],
                data_quality=None if profile.name == PREDICTION else dict(
                    zip(QUALITY_CHECKS, data_quality[i].tolist(), strict=True)),
                baseline_samples=self._baseline_samples[i]))
            start = end
        counters, pending = self.outcomes.snapshot()
        slos = []
        for slo in cfg.slos:
            events, bad = counters.slo[slo.name] if slo.type == "correctness" else request_slo.get(slo.name, (0, 0))
            slos.append(SLOCounts(slo.name, events, bad, slo.objective, slo.threshold_seconds))
        dq = cfg.data_quality
        return Snapshot(
            model=self.name, versions=versions, latency_bounds=tuple(float(b) for b in cfg.latency_buckets),
            features=tuple(features), unknown_features=unknown, unknown_feature_names=unknown_names,
            rejected=rejected,
            data_quality_thresholds={"missing": dq.max_missing_ratio,
                                     "unexpected_category": dq.max_unexpected_category_ratio,
                                     "out_of_range": dq.max_out_of_range_ratio},
            stale_after_seconds=cfg.stale_after_seconds, window_samples=window_samples,
            window_min_samples=cfg.window.min_samples, export_bins=cfg.drift.export_bins, slos=tuple(slos),
            outcomes=self._outcome_snapshot(counters, pending), evaluation=self._evaluation,
            limit_hits=limit_hits, bin_rows=self._bin_rows, bin_counts=coarse,
            bin_baseline_ratio=self._bin_baseline_ratio)

    def _outcome_snapshot(self, counters: OutcomeCounters, pending: int) -> OutcomeSnapshot | None:
        outcomes = self.outcomes
        if not outcomes.enabled:
            return None
        fairness = self.config.fairness.threshold
        return OutcomeSnapshot(
            counters=counters, pending=pending, class_names=(*outcomes.classes, OTHER),
            reference_quality=dict(self.baseline.reference_quality),
            quality_thresholds=outcomes.thresholds(self.baseline),
            fairness_thresholds={} if not outcomes.attributes else {
                "demographic_parity_difference": fairness, "equal_opportunity_difference": fairness},
            stale_after_seconds=self.config.labels.stale_after_seconds)
