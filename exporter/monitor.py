"""``ModelMonitor``: the state of one monitored model.

Ingest only turns values into bin indices and adds count vectors to the current time bucket
(O(records × features), numpy). ``evaluate()`` compares the window with the baseline
(O(features × bins), independent of traffic) and publishes an immutable ``Evaluation``
that the metrics collector reads without touching the ingest path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter import drift
from exporter.baseline import PREDICTION, Baseline, CategoricalProfile, FeatureProfile, NumericProfile, category_key
from exporter.batch import Batch, Rejection
from exporter.config import PVALUE_METHODS, ModelConfig
from exporter.limits import OTHER, safe_label
from exporter.outcomes import LabelResult, OutcomeTracker, QualityEvaluation, meets
from exporter.quality import encode
from exporter.window import BucketRing

NUMERIC_METHODS = ("psi", "js", "kl", "ks", "wasserstein")
CATEGORICAL_METHODS = ("psi", "js", "kl", "chi2")
QUALITY_CHECKS = ("missing", "type_errors", "out_of_range", "unexpected")
HEALTH_WEIGHTS = {"quality": 0.4, "drift": 0.3, "data_quality": 0.15, "slo": 0.15}


class MonitorError(ValueError):
    """The model's config and baseline do not fit together."""


def methods_for(profile: FeatureProfile) -> tuple[str, ...]:
    return NUMERIC_METHODS if isinstance(profile, NumericProfile) else CATEGORICAL_METHODS


@dataclass(frozen=True)
class _DriftGroup:
    """Features with one bin layout, stacked as rows; baseline side precomputed once."""

    profiles: list[FeatureProfile]
    index: np.ndarray
    methods: tuple[str, ...]
    detections: list[str]
    thresholds: list[dict[str, float]]
    base_fine: np.ndarray
    base_coarse: np.ndarray
    edges: np.ndarray | None
    support: np.ndarray | None
    std: np.ndarray | None


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    samples: int
    scores: dict[str, float]
    pvalues: dict[str, float]
    thresholds: dict[str, float]
    detection: str
    detected: bool | None
    """None when the window holds fewer than ``min_samples`` values of this feature."""


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
class Snapshot:
    """A consistent copy of the counters, taken under the lock in O(bins)."""

    versions: dict[str, VersionStats]
    cumulative_bins: np.ndarray
    quality: np.ndarray
    unknown_features: int
    rejected: dict[str, int]
    slo: dict[str, tuple[int, int]]
    window_samples: int
    evaluation: Evaluation | None
    limit_hits: dict[str, int] = field(default_factory=dict)


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
        self._check_drift_config()
        sizes = np.array([p.n_bins for p in self.profiles], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(sizes)))
        self._records_slot = int(self.offsets[-1])
        # After the records slot: window sums of data-quality problems, then (events, bad) per
        # request SLO; the health score reads them as rates over the window.
        self._dq_slot = self._records_slot + 1
        self._slo_slot = self._dq_slot + len(QUALITY_CHECKS)
        self._window_slos = [s for s in config.slos if s.type in ("latency", "availability")]
        width = self._slo_slot + 2 * len(self._window_slos)
        win = config.window
        now = clock()
        self._window = BucketRing(width, win.n_buckets, win.bucket_seconds, now)
        self.outcomes = OutcomeTracker(config, baseline, now)
        self._groups = self._drift_groups()
        self._cumulative = np.zeros(self._records_slot, dtype=np.int64)
        self._quality = np.zeros((len(self.profiles), len(QUALITY_CHECKS)), dtype=np.int64)
        self._unknown_features = 0
        self.unknown_feature_names: list[str] = []
        self._versions: dict[str, VersionStats] = {}
        self._rejected: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        """Times a cap in ``limits`` was hit, by cap (exported as mlmon_limit_hits_total)."""
        self.retired_versions = 0
        self._slo = {s.name: [0, 0] for s in config.slos}
        self._latency_bounds = np.asarray(config.latency_buckets, dtype=np.float64)
        self._lock = threading.Lock()
        self._evaluation: Evaluation | None = None
        self.started_at = now

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
        if self.baseline.task == "regression" or set(map(type, predictions)) == {str}:
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
        """Add a parsed batch. Encoding runs outside the lock; only the additions hold it."""
        now = self.clock() if now is None else now
        n = batch.size
        quality = np.zeros_like(self._quality)
        parts: list[np.ndarray] = []
        pred_keys = None if batch.predictions is None else self._prediction_keys(batch.predictions)
        for i, profile in enumerate(self.profiles):
            if profile.name == PREDICTION:
                if pred_keys is None:
                    continue
                column = pred_keys
            else:
                column = batch.features.get(profile.name)
            if column is None:
                quality[i, 0] += n
                continue
            enc = encode(profile, column)
            quality[i] = (enc.missing, enc.type_errors, enc.out_of_range, enc.unexpected)
            if enc.bins.size:
                parts.append(enc.bins + self.offsets[i])
        unknown = [name for name in batch.features if name not in self.feature_index]
        unknown_values = sum(sum(v is not None for v in batch.features[name]) for name in unknown)
        parts.append(np.full(n, self._records_slot, dtype=np.int64))
        vector = np.bincount(np.concatenate(parts), minlength=self._window.width)
        vector[self._dq_slot:self._slo_slot] = quality[:len(self.baseline.features)].sum(axis=0)

        latency = batch.latency_seconds
        reported = latency[np.isfinite(latency)]
        lat_counts = np.bincount(np.searchsorted(self._latency_bounds, reported, side="left"),
                                 minlength=self._latency_bounds.size + 1)
        errors = int(np.count_nonzero(batch.error))
        slo_add = self._slo_events(batch, reported)
        for j, slo in enumerate(self._window_slos):
            vector[self._slo_slot + 2 * j:self._slo_slot + 2 * j + 2] = slo_add[slo.name]
        version = self._version(batch.version)
        if pred_keys is not None:
            self.outcomes.observe(batch.ids, version, pred_keys, self.outcomes.probabilities(batch.predictions),
                                  self._group_values(batch.groups), now)
        classes: Counter[str] = Counter()
        if pred_keys is not None and self.baseline.task != "regression":
            classes.update(k for k in pred_keys if k is not None)

        with self._lock:
            self._window.add(now, vector)
            self._cumulative += vector[:self._records_slot]
            self._quality += quality
            self._unknown_features += unknown_values
            self._remember_unknown(unknown)
            if batch.rejected:
                self._rejected["invalid_record"] += len(batch.rejected)
            for name, (events, bad) in slo_add.items():
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
                stats.errors += errors
                stats.latency_buckets += lat_counts
                stats.latency_sum += float(reported.sum())
                stats.last_seen = now
                for key, count in classes.items():
                    stats.classes[self._class_label(key, stats)] += count
        feature_rows = quality[:len(self.baseline.features)]  # the prediction, last, is not a feature
        problems = dict(zip(QUALITY_CHECKS, feature_rows.sum(axis=0).tolist(), strict=True))
        problems["unknown_features"] = unknown_values
        return IngestResult(accepted=n, rejected=batch.rejected, problems=problems)

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

    def ingest_labels(self, ids: list[Any], labels: list[Any], now: float | None = None) -> LabelResult:
        """Join ground truth to pending predictions; invalid labels are refused alone."""
        result = self.outcomes.ingest_labels(ids, labels, self.clock() if now is None else now)
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
        counts = self.window_counts(now)
        min_samples = self.config.window.min_samples
        by_name = {fd.feature: fd for g in self._groups for fd in self._group_drift(g, counts, min_samples)}
        results = [by_name[p.name] for p in self.profiles]
        quality = self.outcomes.evaluate(now) if self.outcomes.enabled else None
        components = self._health_components(counts, results, quality)
        weight = sum(HEALTH_WEIGHTS[k] for k in components)
        health = sum(HEALTH_WEIGHTS[k] * v for k, v in components.items()) / weight if weight else float("nan")
        evaluation = Evaluation(
            timestamp=now, duration_seconds=time.perf_counter() - started,
            samples=int(counts[self._records_slot]), min_samples=min_samples, features=tuple(results),
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
            out["drift"] = 1 - sum(d.detected for d in features) / len(features)
        records = counts[self._records_slot]
        if records:
            rate = counts[self._dq_slot:self._slo_slot].sum() / (records * max(1, len(self.baseline.features)))
            out["data_quality"] = float(1 - min(1.0, rate / self.config.data_quality.max_missing_ratio))
        burns = []
        for j, slo in enumerate(self._window_slos):
            events, bad = counts[self._slo_slot + 2 * j:self._slo_slot + 2 * j + 2]
            if events:
                burns.append(bad / events / (1 - slo.objective))
        if burns:
            # 1 while the error budget burns no faster than sustainable, 0 at a 10x burn rate.
            out["slo"] = float(np.mean([np.clip(1 - (b - 1) / 9, 0, 1) for b in burns]))
        return out

    def _drift_groups(self) -> list[_DriftGroup]:
        """Features that share a bin layout, so each statistic runs once per group (O(bins) numpy)."""
        by_layout: dict[tuple[Any, ...], list[int]] = {}
        for i, p in enumerate(self.profiles):
            layout = (p.kind, p.n_bins, tuple(p.coarse_starts.tolist()) if isinstance(p, NumericProfile) else ())
            by_layout.setdefault(layout, []).append(i)
        cfg = self.config.drift
        groups = []
        for members in by_layout.values():
            profiles = [self.profiles[i] for i in members]
            first = profiles[0]
            detections = [cfg.detection_for(p.name, p.kind) for p in profiles]
            methods = tuple(m for m in methods_for(first) if m in cfg.methods or m in detections)
            base = np.stack([p.fine_counts for p in profiles]).astype(np.float64)
            index = np.stack([np.arange(self.offsets[i], self.offsets[i + 1]) for i in members])
            numeric = isinstance(first, NumericProfile)
            groups.append(_DriftGroup(
                profiles=profiles, index=index, methods=methods, detections=detections,
                thresholds=[{m: cfg.threshold_for(p.name, m) for m in methods} for p in profiles],
                base_fine=base, base_coarse=first.coarse_counts(base) if numeric else base,
                edges=np.stack([p.edges for p in profiles]) if numeric else None,
                support=np.array([p.support for p in profiles]).T if numeric else None,
                std=np.array([p.std for p in profiles]) if numeric else None))
        return groups

    def _group_drift(self, g: _DriftGroup, counts: np.ndarray, min_samples: int) -> list[FeatureDrift]:
        current = counts[g.index].astype(np.float64)
        samples = current.sum(axis=1)
        numeric = g.edges is not None
        coarse = g.profiles[0].coarse_counts(current) if numeric else current
        scores: dict[str, np.ndarray] = {}
        pvalues: dict[str, np.ndarray] = {}
        for method in g.methods:
            if method == "psi":
                scores[method] = drift.psi(g.base_coarse, coarse)
            elif method == "js":
                scores[method] = drift.js_distance(g.base_coarse, coarse)
            elif method == "kl":
                scores[method] = drift.kl_divergence(g.base_coarse, coarse)
            elif method == "ks":
                scores[method], pvalues[method] = drift.ks_from_counts(g.base_fine, current)
            elif method == "chi2":
                scores[method], pvalues[method] = drift.chi_square(g.base_fine, current)
            elif method == "wasserstein" and numeric:
                lo, hi = g.support
                scores[method] = drift.wasserstein_from_counts(g.edges, g.base_fine, current, lo, hi, g.std)
        out = []
        for r, profile in enumerate(g.profiles):
            n, detection, thresholds = int(samples[r]), g.detections[r], g.thresholds[r]
            if n < min_samples:
                out.append(FeatureDrift(profile.name, profile.kind, n, {}, {}, thresholds, detection, None))
                continue
            row_scores = {m: float(v[r]) for m, v in scores.items()}
            row_p = {m: float(v[r]) for m, v in pvalues.items()}
            if detection in PVALUE_METHODS:
                detected = bool(row_p[detection] < thresholds[detection])
            else:
                detected = bool(row_scores[detection] > thresholds[detection])
            out.append(FeatureDrift(profile.name, profile.kind, n, row_scores, row_p, thresholds, detection, detected))
        return out

    @property
    def evaluation(self) -> Evaluation | None:
        return self._evaluation

    # ---- reading ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = self.clock()
        with self._lock:
            versions = {
                v: VersionStats(first_seen=s.first_seen, predictions=s.predictions, errors=s.errors,
                                latency_buckets=s.latency_buckets.copy(), latency_sum=s.latency_sum,
                                last_seen=s.last_seen, classes=Counter(s.classes))
                for v, s in self._versions.items()}
            return Snapshot(
                versions=versions, cumulative_bins=self._cumulative.copy(), quality=self._quality.copy(),
                unknown_features=self._unknown_features, rejected=dict(self._rejected),
                slo={k: (e, b) for k, (e, b) in self._slo.items()},
                window_samples=int(self._window.total(now)[self._records_slot]),
                evaluation=self._evaluation, limit_hits=dict(self.limit_hits))

    def status(self) -> dict[str, Any]:
        """JSON status for ``GET /v1/models``."""
        snap = self.snapshot()
        ev = snap.evaluation
        return {
            "model": self.name,
            "task": self.baseline.task,
            "features": [p.name for p in self.profiles if p.name != PREDICTION],
            "versions": {v: {"predictions": s.predictions, "errors": s.errors, "first_seen": s.first_seen,
                             "last_seen": s.last_seen} for v, s in snap.versions.items()},
            "window": {"seconds": self.config.window.window_seconds,
                       "bucket_seconds": self.config.window.bucket_seconds,
                       "samples": snap.window_samples, "min_samples": self.config.window.min_samples},
            "last_evaluation": None if ev is None else {
                "timestamp": ev.timestamp, "duration_seconds": ev.duration_seconds, "samples": ev.samples,
                "drifted_features": list(ev.drifted),
                "prediction_drift": next((f.detected for f in ev.features if f.feature == PREDICTION), None),
                "features_below_min_samples": [f.feature for f in ev.features if f.detected is None],
            },
            "rejected": snap.rejected,
            "unknown_features": self.unknown_feature_names,
            "labels": None if not self.outcomes.enabled else {
                "pending": len(self.outcomes.store), "joined": self.outcomes.counters.labels,
                "unmatched": self.outcomes.counters.unmatched},
            "quality": None if ev is None or ev.quality is None else ev.quality.per_version,
            "estimated_accuracy": None if ev is None or ev.quality is None else ev.quality.estimated_accuracy,
            "health": None if ev is None else {"score": ev.health, "components": ev.health_components},
        }
