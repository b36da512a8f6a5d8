"""Outcomes of predictions: the label join, model quality, fairness and the label-free estimate.

Predictions with an id wait in a bounded ``PendingStore`` until their label arrives. Joined
outcomes are added, by label arrival time, to time-bucketed windows of *sums* (confusion counts,
error sums, per-group counts) so quality over the window is exact and O(bins) to read, like
drift. The label-free estimate is summed by prediction time, so it covers every prediction
long before labels come.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from exporter import performance
from exporter.batch import Rejection, all_strings
from exporter.config import HIGHER_IS_BETTER, ModelConfig
from exporter.pending import UNMATCHED, PendingStore
from exporter.profile import OTHER, Baseline, category_key
from exporter.slots import Slots
from exporter.window import BucketRing

MAX_VERSIONS = 10
"""Versions tracked separately for quality; older ones share ``__other__`` (bounds memory and series)."""
CORRECT_FIELDS = ("labelled", "correct")
LABEL_DELAY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0,
                       7 * 86400.0, 30 * 86400.0)


class _Index:
    """Values → small integers, capped; the overflow shares one ``__other__`` slot."""

    def __init__(self, cap: int, fixed: tuple[str, ...] = ()) -> None:
        self.cap = cap
        self.names: list[str] = list(fixed)
        self._index = {n: i for i, n in enumerate(self.names)}
        self.frozen = bool(fixed)

    def load(self, names: list[str]) -> None:
        """Restore the names of a checkpoint, in their order (their indices key the windows)."""
        if len(names) > self.cap or (self.frozen and list(names) != self.names):
            raise ValueError("value index does not match the configuration")
        self.names = [str(n) for n in names]
        self._index = {n: i for i, n in enumerate(self.names)}

    @property
    def size(self) -> int:
        return self.cap + 1

    @property
    def other(self) -> int:
        return self.cap

    def get(self, value: Any) -> int:
        key = category_key(value)
        if key is None:
            return -1
        i = self._index.get(key)
        if i is not None:
            return i
        if self.frozen or len(self.names) >= self.cap:
            return self.cap
        self._index[key] = len(self.names)
        self.names.append(key)
        return len(self.names) - 1

    def indices(self, values: list[Any]) -> np.ndarray:
        """``get`` for a whole column; at C speed when the index is fixed and every value a string."""
        if self.frozen and all_strings(values):
            return np.fromiter(map(self._index.get, values, repeat(self.cap)), dtype=np.int64, count=len(values))
        return np.array([self.get(v) for v in values], dtype=np.int64)

    def label(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else OTHER


@dataclass(frozen=True)
class LabelResult:
    matched: int
    unmatched: int
    duplicates: int
    rejected: list[Rejection]


@dataclass(frozen=True)
class QualityEvaluation:
    """Immutable quality snapshot for the collector."""

    per_version: dict[str, dict[str, float]]
    per_class: dict[str, dict[str, dict[str, float]]]
    labelled: dict[str, int]
    estimated_accuracy: float
    fairness: dict[str, dict[str, float]]
    correct_ratio: float
    """Share of labelled predictions in the window that were correct (NaN without labels)."""


@dataclass
class OutcomeCounters:
    labels: int = 0
    unmatched: int = 0
    duplicates: int = 0
    invalid: int = 0
    expired_ttl: int = 0
    evicted_capacity: int = 0
    held: int = 0
    """Labels that came before their prediction, waiting up to ``labels.early_hold`` for it."""
    last_label: float = 0.0
    delay_buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LABEL_DELAY_BUCKETS) + 1, np.int64))
    delay_sum: float = 0.0
    confusion: dict[str, np.ndarray] = field(default_factory=dict)
    slo: dict[str, list[int]] = field(default_factory=dict)
    unjoinable: dict[str, int] = field(default_factory=dict)
    """Predictions with an id no label can join, by reason (duplicate_id, no_prediction, wrong_type)."""


class OutcomeTracker:
    """Joins labels to predictions for one model and keeps quality windows."""

    def __init__(self, config: ModelConfig, baseline: Baseline, now: float) -> None:
        self.config = config
        self.task = baseline.task
        self.regression = baseline.task == "regression"
        self.classes = tuple(baseline.classes)
        self.enabled = self.regression or bool(self.classes)
        """Classification quality needs the class list from the baseline (built with --prediction)."""
        k = len(self.classes) + 1  # + __other__ for labels or predictions outside the baseline's classes
        self.k = k
        self.class_index = _Index(len(self.classes), self.classes)
        self.positive = self._positive_class(config.positive_class)
        self.unjoinable: Counter[str] = Counter()
        """Predictions whose id was not kept for a label, by reason (duplicate ids are counted by the store)."""
        self._early: dict[str, tuple[Any, float]] = {}
        """Labels waiting for their prediction: id → (actual, received at), oldest first."""
        self.versions = _Index(MAX_VERSIONS)
        self.calibration = (performance.Calibration.from_dict(baseline.calibration)
                            if baseline.calibration else None)
        win = config.window
        # One block of sums per tracked version: regression sums, or confusion counts then
        # probabilistic sums (field names in ``performance``).
        self._block = (Slots(regression=len(performance.REGRESSION_FIELDS)) if self.regression
                       else Slots(confusion=k * k, proba=len(performance.PROBA_FIELDS)))
        self._quality = BucketRing(self.versions.size * self._block.width, win.n_buckets, win.bucket_seconds, now,
                                   dtype=np.float64)
        self._estimate = BucketRing(len(performance.CONFIDENCE_FIELDS), win.n_buckets, win.bucket_seconds, now,
                                    dtype=np.float64)
        self.attributes = config.fairness.attributes if not self.regression and self.positive is not None else ()
        self.groups = {a: _Index(config.fairness.max_groups) for a in self.attributes}
        self._n_groups = config.fairness.max_groups + 1
        group_block = self._n_groups * len(performance.FAIRNESS_FIELDS)
        self._fair = Slots(**{a: group_block for a in self.attributes})
        self._fairness = BucketRing(max(1, self._fair.width), win.n_buckets, win.bucket_seconds, now)
        self._correct = BucketRing(len(CORRECT_FIELDS), win.n_buckets, win.bucket_seconds, now)
        columns: dict[str, Any] = {"version": np.int16}
        if self.regression:
            columns["predicted"] = np.float64
        else:
            columns["predicted"] = np.int16
            columns["proba"] = (np.float32, max(1, len(self.classes)))
        for a in self.attributes:
            columns[f"group:{a}"] = np.int16
        labels = config.labels
        self.store = PendingStore(labels.max_pending, labels.ttl_seconds, columns)
        self.correctness = [s for s in config.slos if s.type == "correctness"]
        self.counters = OutcomeCounters(slo={s.name: [0, 0] for s in self.correctness})
        self._lock = threading.Lock()
        self._evaluation: QualityEvaluation | None = None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Quality windows and pending predictions (arrays) and the value → index maps (JSON);
        cumulative counters are left out: Prometheus expects them to restart from zero."""
        with self._lock:
            arrays = {f"{name}/{k}": v.copy() for name, ring in self._rings().items() for k, v in ring.state().items()}
            arrays.update({f"store/{k}": v.copy() for k, v in self.store.state().items()})
            meta = {"versions": list(self.versions.names),
                    "groups": {a: list(ix.names) for a, ix in self.groups.items()}}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        with self._lock:
            for name, ring in self._rings().items():
                ring.restore({k: arrays[f"{name}/{k}"] for k in ("buckets", "total", "epoch")})
            self.store.restore({k[len("store/"):]: v for k, v in arrays.items() if k.startswith("store/")})
            self.versions.load(meta["versions"])
            for a, names in meta["groups"].items():
                if a not in self.groups:
                    raise ValueError(f"fairness attribute {a!r} is no longer configured")
                self.groups[a].load(names)

    def _rings(self) -> dict[str, BucketRing]:
        return {"quality": self._quality, "estimate": self._estimate, "fairness": self._fairness,
                "correct": self._correct}

    def _positive_class(self, configured: str | None) -> int | None:
        if self.regression or not self.classes:
            return None
        if configured is not None:
            return self.classes.index(configured) if configured in self.classes else None
        return 1 if len(self.classes) == 2 else None

    # ---- predictions --------------------------------------------------------------------

    def probabilities(self, predictions: list[Any]) -> np.ndarray | None:
        """n × classes matrix of sent probabilities (NaN rows where none were sent)."""
        if self.regression or not self.classes:
            return None
        if all_strings(predictions):  # class names only: nothing to read
            return None
        c = len(self.classes)
        out = np.full((len(predictions), c), np.nan, dtype=np.float64)
        any_sent = False
        for i, p in enumerate(predictions):
            if isinstance(p, dict):
                out[i] = [float(p.get(name, 0.0)) for name in self.classes]
                any_sent = True
            elif isinstance(p, list) and len(p) == c:
                out[i] = p
                any_sent = True
        return out if any_sent else None

    def observe(self, ids: list[str | None] | None, version: str, predicted: list[Any],
                proba: np.ndarray | None, groups: dict[str, list[Any]], now: float,
                classes: np.ndarray | None = None) -> None:
        """Record predictions: the estimate window, and pending entries for those with an id.
        ``classes``, when given, is ``class_index.indices(predicted)`` computed already."""
        if not self.enabled:
            return
        n = len(predicted)
        if self.regression:
            pred_col = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                                 for v in predicted], dtype=np.float64)
            unusable = ~np.isfinite(pred_col)
        else:
            pred_col = (self.class_index.indices(predicted) if classes is None else classes).astype(np.int16)
            unusable = pred_col < 0
        if ids is not None and unusable.any():
            # A record without a usable prediction has nothing a label could be compared with: its id
            # is not kept, so its label counts as unmatched instead of vanishing from quality.
            lost = Counter("no_prediction" if p is None else "wrong_type"
                           for i, p, bad in zip(ids, predicted, unusable.tolist(), strict=True)
                           if bad and i is not None)
            if lost:
                with self._lock:
                    self.unjoinable.update(lost)
                ids = [None if bad else i for i, bad in zip(ids, unusable.tolist(), strict=True)]
        columns: dict[str, Any] = {"predicted": pred_col}
        estimate = None
        if proba is not None:
            columns["proba"] = proba.astype(np.float32)
            sent = np.isfinite(proba).all(axis=1)
            if sent.any():
                estimate = performance.confidence_sums(proba[sent], calibration=self.calibration)
        with self._lock:
            columns["version"] = np.full(n, self.versions.get(version), dtype=np.int16)
            for a in self.attributes:
                values = groups.get(a) or [None] * n
                columns[f"group:{a}"] = self.groups[a].indices(values).astype(np.int16)
            if estimate is not None:
                self._estimate.add(now, estimate)
            if ids is not None and any(i is not None for i in ids):
                self.store.add(ids, now, columns)
                if self._early:
                    self._join_held(ids, now)

    # ---- labels ------------------------------------------------------------------------

    def _actual(self, labels: list[Any]) -> tuple[np.ndarray, list[int]]:
        """Label values as class indices (or floats); indices of labels that are unusable."""
        bad = []
        if self.regression:
            out = np.full(len(labels), np.nan)
            for i, v in enumerate(labels):
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    out[i] = v
                else:
                    bad.append(i)
            return out, bad
        idx = np.empty(len(labels), dtype=np.int64)
        for i, v in enumerate(labels):
            if isinstance(v, (dict, list)) or category_key(v) is None:
                bad.append(i)
                idx[i] = -1
            else:
                idx[i] = self.class_index.get(v)
        return idx, bad

    def ingest_labels(self, ids: list[Any], labels: list[Any], now: float,
                      positions: Sequence[int] | None = None) -> LabelResult:
        """Join labels; ``positions`` are the items' indices in the request (default: 0..n-1)."""
        at = range(len(ids)) if positions is None else positions
        rejected = []
        actual, bad = self._actual(labels)
        reason = "must be a number" if self.regression else "must be a class label"
        for i in bad:
            rejected.append(Rejection(at[i], f"labels[{at[i]}].label", reason, "invalid_label"))
        keep = np.ones(len(ids), dtype=bool)
        keep[bad] = False
        for i, v in enumerate(ids):
            if keep[i] and (v is None or isinstance(v, (dict, list, bool, float))):
                keep[i] = False
                rejected.append(Rejection(at[i], f"labels[{at[i]}].id", "must be a string or integer", "invalid_label"))
        ids_kept = [str(v) for v, k in zip(ids, keep, strict=True) if k]
        actual = actual[keep]
        with self._lock:
            self.counters.invalid += len(rejected)
            if not self.enabled:
                self.counters.unmatched += len(ids_kept)
                return LabelResult(0, len(ids_kept), 0, rejected)
            took = self.store.take(ids_kept, now)
            self.counters.labels += took.matched
            held = self._hold(ids_kept, actual, took.status, now)  # may count evictions as unmatched
            self.counters.unmatched += took.unmatched - held
            self.counters.duplicates += took.duplicates
            if took.matched:
                self._join(took, actual[took.index], now)
        return LabelResult(took.matched, took.unmatched, took.duplicates, rejected)

    def _hold(self, ids: list[str], actual: np.ndarray, status: np.ndarray, now: float) -> int:
        """Keep unmatched labels for ``labels.early_hold``: their prediction may still be on its way
        (the label service can be faster than the model's logger). Called under the lock."""
        cfg = self.config.labels
        if cfg.early_hold_seconds <= 0:
            return 0
        unmatched = np.flatnonzero(status == UNMATCHED)
        for i in unmatched.tolist():
            if len(self._early) >= cfg.max_early and ids[i] not in self._early:
                self._early.pop(next(iter(self._early)))
                self.counters.unmatched += 1
            self._early[ids[i]] = (actual[i], now)
        return int(unmatched.size)

    def _join_held(self, ids: list[str | None], now: float) -> None:
        """Join labels that came before these predictions. Called under the lock."""
        held = {i: self._early.pop(i) for i in ids if i is not None and i in self._early}
        if not held:
            return
        took = self.store.take(list(held), now)
        self.counters.labels += took.matched
        self.counters.unmatched += took.unmatched
        self.counters.duplicates += took.duplicates
        if took.matched:
            values = np.asarray([v for v, _ in held.values()])
            self._join(took, values[took.index], now)

    def _expire_held(self, now: float) -> None:
        cutoff = now - self.config.labels.early_hold_seconds
        while self._early:
            oldest = next(iter(self._early))
            if self._early[oldest][1] > cutoff:
                break
            del self._early[oldest]
            self.counters.unmatched += 1

    def _join(self, took: Any, actual: np.ndarray, now: float) -> None:
        c = self.counters
        c.last_label = now
        delays = took.delay
        c.delay_buckets += np.bincount(np.searchsorted(LABEL_DELAY_BUCKETS, delays, side="left"),
                                       minlength=len(LABEL_DELAY_BUCKETS) + 1)
        c.delay_sum += float(delays.sum())
        version = took.columns["version"].astype(np.int64)
        predicted = took.columns["predicted"]
        blocks = np.zeros((self.versions.size, self._block.width))
        for v in np.unique(version):
            sel = version == v
            block = blocks[int(v)]
            if self.regression:
                block[self._block.regression] += performance.regression_sums(actual[sel], predicted[sel])
                continue
            conf = performance.confusion_counts(actual[sel], predicted[sel].astype(np.int64), self.k)
            block[self._block.confusion] += conf.ravel()
            name = self.versions.label(int(v))
            c.confusion[name] = c.confusion.get(name, np.zeros((self.k, self.k), np.int64)) + conf
            proba = took.columns["proba"][sel].astype(np.float64)
            known = actual[sel] < len(self.classes)
            if known.any():
                block[self._block.proba] += performance.probabilistic_sums(proba[known], actual[sel][known])
        vector = blocks.ravel()
        self._quality.add(now, vector)
        if self.regression:
            tolerance = self.correctness[0].tolerance if self.correctness else None
            good = (performance.correct_mask(actual, predicted, tolerance) if tolerance is not None
                    else np.ones(actual.size, dtype=bool))
        else:
            good = performance.correct_mask(actual, predicted.astype(np.int64))
        self._correct.add(now, np.array([actual.size, int(good.sum())], dtype=np.int64))
        for slo in self.correctness:
            ok = good if not self.regression else performance.correct_mask(actual, predicted, slo.tolerance)
            c.slo[slo.name][0] += actual.size
            c.slo[slo.name][1] += int(actual.size - ok.sum())
        if self.attributes:
            fair = np.zeros(self._fairness.width, dtype=np.int64)
            pred_pos = predicted.astype(np.int64) == self.positive
            act_pos = actual == self.positive
            for a in self.attributes:
                counts = performance.fairness_counts(took.columns[f"group:{a}"].astype(np.int64),
                                                     self._n_groups, pred_pos, act_pos)
                fair[self._fair[a]] = counts.ravel()
            self._fairness.add(now, fair)

    def expire(self, now: float) -> None:
        with self._lock:
            self.store.expire(now)
            self._expire_held(now)

    # ---- evaluation --------------------------------------------------------------------

    def evaluate(self, now: float) -> QualityEvaluation:
        self.expire(now)
        with self._lock:
            quality = self._quality.total(now)
            estimate = self._estimate.total(now)
            fairness = self._fairness.total(now)
            correct = self._correct.total(now)
            version_names = [self.versions.label(i) for i in range(self.versions.size)]
        per_version: dict[str, dict[str, float]] = {}
        per_class: dict[str, dict[str, dict[str, float]]] = {}
        labelled: dict[str, int] = {}
        for name, block in zip(version_names, quality.reshape(-1, self._block.width), strict=True):
            if self.regression:
                sums = block[self._block.regression]
                if sums[0] == 0:
                    continue
                labelled[name] = int(sums[0])
                per_version[name] = performance.regression_metrics(sums)
                continue
            conf = block[self._block.confusion].reshape(self.k, self.k)
            n = int(conf.sum())
            if n == 0:
                continue
            labelled[name] = n
            classes = [*self.classes, OTHER]
            # The positive class's precision/recall/F1 are the headline of a binary classifier only.
            binary = self.positive is not None and len(self.classes) == 2
            positive = self.classes[self.positive] if binary and self.positive is not None else None
            metrics = performance.classification_metrics(conf, classes, positive)
            values = {m: float(metrics[m]) for m in ("accuracy", "precision", "recall", "f1")}
            values.update({f"{m}_macro": float(metrics[f"{m}_macro"]) for m in ("precision", "recall", "f1")})
            probs = block[self._block.proba]
            if probs[0] > 0:
                values.update(performance.probabilistic_metrics(probs))
            per_version[name] = values
            per_class[name] = {cls: {m: float(x) for m, x in stats.items() if m != "support"}
                               for cls, stats in metrics["per_class"].items() if stats.get("support", 0) > 0}
        gaps = {}
        for a in self.attributes:
            groups = fairness[self._fair[a]].reshape(-1, len(performance.FAIRNESS_FIELDS))
            gaps[a] = performance.fairness_gaps(groups, self.config.fairness.min_samples)
        evaluation = QualityEvaluation(
            per_version=per_version, per_class=per_class, labelled=labelled,
            estimated_accuracy=performance.estimated_accuracy(estimate) if estimate[0] > 0 else math.nan,
            fairness=gaps, correct_ratio=correct[1] / correct[0] if correct[0] else math.nan)
        self._evaluation = evaluation
        return evaluation

    @property
    def evaluation(self) -> QualityEvaluation | None:
        return self._evaluation

    def thresholds(self, baseline: Baseline) -> dict[str, float]:
        out = {}
        for metric, threshold in self.config.quality_thresholds.items():
            value = threshold.resolve(baseline.reference_quality.get(metric))
            if value is not None:
                out[metric] = value
        return out

    def snapshot(self) -> tuple[OutcomeCounters, int]:
        with self._lock:
            c = self.counters
            return OutcomeCounters(
                labels=c.labels, unmatched=c.unmatched, duplicates=c.duplicates, invalid=c.invalid,
                expired_ttl=self.store.expired_ttl, evicted_capacity=self.store.evicted_capacity, held=len(self._early),
                last_label=c.last_label,
                delay_buckets=c.delay_buckets.copy(), delay_sum=c.delay_sum,
                confusion={k: v.copy() for k, v in c.confusion.items()},
                slo={k: list(v) for k, v in c.slo.items()},
                unjoinable={"duplicate_id": self.store.duplicate_predictions, **self.unjoinable}), len(self.store)


def meets(metric: str, value: float, threshold: float) -> bool:
    """Whether a quality value is on the good side of its threshold."""
    return value >= threshold if metric in HIGHER_IS_BETTER else value <= threshold

