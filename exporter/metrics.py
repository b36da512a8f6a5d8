"""Prometheus exposition: a custom collector that maps monitor snapshots to metric families.

It reads only ``ModelMonitor.snapshot()`` (counters, resolved thresholds and the last immutable
evaluation), so a scrape never waits on statistics and every number has one source. Families are
declared in :mod:`exporter.contract`; a name missing there fails the scrape in tests, not in a
dashboard. One function per theme: traffic, features, drift, outcomes, SLOs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.contract import METRICS, MetricSpec, spec
from exporter.monitor import ModelMonitor, Snapshot
from exporter.outcomes import LABEL_DELAY_BUCKETS
from exporter.state import CheckpointStats

_DATA_QUALITY_METRICS = {
    "missing": "mlmon_feature_missing",
    "type_errors": "mlmon_feature_type_errors",
    "out_of_range": "mlmon_feature_out_of_range",
    "unexpected": "mlmon_feature_unexpected_category",
}
LIMIT_NAMES = ("max_versions", "max_label_length", "max_unknown_feature_names", "max_classes")
UNJOINABLE_REASONS = ("duplicate_id", "no_prediction", "wrong_type")
Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _family(metric: MetricSpec) -> Family:
    labels = list(metric.labels)
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "histogram":
        return HistogramMetricFamily(metric.name, metric.help, labels=labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=labels)


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts → the cumulative ``(le, count)`` pairs a histogram family takes."""
    cumulative = 0
    out: list[tuple[str, float]] = []
    for le, count in zip([*bounds, math.inf], counts, strict=True):
        cumulative += count
        out.append(("+Inf" if le == math.inf else repr(float(le)), cumulative))
    return out


class _Families:
    """Creates each family once, from its contract declaration, and keeps families grouped."""

    def __init__(self) -> None:
        self._by_name: dict[str, Family] = {}

    def _get(self, name: str) -> Family:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = _family(spec(name))
        return fam

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """One sample; ``labels`` in the order the contract declares them."""
        fam = self._get(name)
        if isinstance(fam, HistogramMetricFamily):
            raise TypeError(f"{name} is a histogram; use histogram()")
        fam.add_metric(list(labels), value)

    def histogram(self, name: str, labels: Sequence[str], buckets: list[tuple[str, float]], total: float) -> None:
        fam = self._get(name)
        if not isinstance(fam, HistogramMetricFamily):
            raise TypeError(f"{name} is a {fam.type}, not a histogram")
        fam.add_metric(list(labels), buckets, total)

    def all(self) -> Iterable[Metric]:
        return self._by_name.values()


def _traffic(s: Snapshot, f: _Families) -> None:
    m = s.model
    for version, v in sorted(s.versions.items()):
        f.add("mlmon_predictions", [m, version], v.predictions)
        f.add("mlmon_prediction_errors", [m, version], v.errors)
        f.histogram("mlmon_prediction_latency_seconds", [m, version],
                    _buckets(s.latency_bounds, v.latency_buckets.tolist()), v.latency_sum)
        f.add("mlmon_last_prediction_timestamp_seconds", [m, version], v.last_seen)
        f.add("mlmon_model_version_info", [m, version], 1)
        f.add("mlmon_model_version_first_seen_timestamp_seconds", [m, version], v.first_seen)
        for cls, count in sorted(v.classes.items()):
            f.add("mlmon_prediction_class", [m, version, cls], count)
    f.add("mlmon_ingest_rejected", [m, "invalid_record"], s.rejected.get("invalid_record", 0))
    for reason, count in sorted(s.rejected.items()):
        if reason != "invalid_record":
            f.add("mlmon_ingest_rejected", [m, reason], count)
    for limit in LIMIT_NAMES:
        f.add("mlmon_limit_hits", [m, limit], s.limit_hits.get(limit, 0))
    f.add("mlmon_predictions_stale_after_seconds", [m], s.stale_after_seconds)


def _features(s: Snapshot, f: _Families) -> None:
    """Coarse bins against the baseline, and data-quality counts per feature."""
    m = s.model
    f.add("mlmon_unknown_features", [m], s.unknown_features)
    for fc in s.features:
        f.add("mlmon_baseline_samples", [m, fc.feature], fc.baseline_samples)
        if s.export_bins:
            for label, count, ratio in zip(fc.bins, fc.counts, fc.baseline_ratio, strict=True):
                f.add("mlmon_feature_bin", [m, fc.feature, label], count)
                f.add("mlmon_baseline_bin_ratio", [m, fc.feature, label], ratio)
        for check, count in (fc.data_quality or {}).items():
            f.add(_DATA_QUALITY_METRICS[check], [m, fc.feature], count)
    for check, ratio in s.data_quality_thresholds.items():
        f.add("mlmon_data_quality_threshold_ratio", [m, check], ratio)


def _drift(s: Snapshot, f: _Families) -> None:
    """Window sizes and the last evaluation: scores, thresholds in force, flags, fleet critical values."""
    m = s.model
    f.add("mlmon_window_samples", [m], s.window_samples)
    f.add("mlmon_window_min_samples", [m], s.window_min_samples)
    ev = s.evaluation
    if ev is None:
        return
    f.add("mlmon_evaluation_timestamp_seconds", [m], ev.timestamp)
    f.add("mlmon_evaluation_duration_seconds", [m], ev.duration_seconds)
    f.add("mlmon_drifted_features", [m], len(ev.drifted))
    f.add("mlmon_recent_window_samples", [m], max((fd.recent_samples for fd in ev.features), default=0))
    for fd in ev.features:
        for method, score in fd.scores.items():
            if _finite(score):
                f.add("mlmon_feature_drift_score", [m, fd.feature, method], score)
        for method, p in fd.pvalues.items():
            if _finite(p):
                f.add("mlmon_feature_drift_pvalue", [m, fd.feature, method], p)
        for method, threshold in fd.thresholds.items():
            if _finite(threshold):
                f.add("mlmon_feature_drift_threshold", [m, fd.feature, method], threshold)
        if fd.recent_score is not None and _finite(fd.recent_score):
            f.add("mlmon_feature_drift_recent_score", [m, fd.feature, fd.detection], fd.recent_score)
        if fd.recent_threshold is not None and _finite(fd.recent_threshold):
            f.add("mlmon_feature_drift_recent_threshold", [m, fd.feature, fd.detection], fd.recent_threshold)
        f.add("mlmon_feature_drift_min_effect", [m, fd.feature, fd.detection], fd.min_effect)
        f.add("mlmon_feature_drift_fleet_min_effect", [m, fd.feature], fd.fleet_min_effect)
        for window, critical in zip(("full", "recent"), fd.fleet_critical, strict=True):
            if _finite(critical):
                f.add("mlmon_feature_drift_fleet_critical", [m, fd.feature, window], critical)
        if fd.detected is not None:
            f.add("mlmon_feature_drift_detected", [m, fd.feature], int(fd.detected))


def _outcomes(s: Snapshot, f: _Families) -> None:
    """Label join, confusion counts, quality, estimate and fairness; then the health score."""
    m = s.model
    o = s.outcomes
    ev = s.evaluation
    if o is not None:
        c = o.counters
        f.add("mlmon_labels", [m], c.labels)
        f.add("mlmon_labels_unmatched", [m], c.unmatched)
        f.add("mlmon_labels_duplicate", [m], c.duplicates)
        f.add("mlmon_labels_expired", [m, "ttl"], c.expired_ttl)
        f.add("mlmon_labels_expired", [m, "capacity"], c.evicted_capacity)
        f.add("mlmon_labels_pending", [m], o.pending)
        f.add("mlmon_labels_held", [m], c.held)
        for reason in UNJOINABLE_REASONS:
            f.add("mlmon_predictions_unjoinable", [m, reason], c.unjoinable.get(reason, 0))
        f.histogram("mlmon_label_delay_seconds", [m], _buckets(LABEL_DELAY_BUCKETS, c.delay_buckets.tolist()),
                    c.delay_sum)
        if c.last_label:
            f.add("mlmon_last_label_timestamp_seconds", [m], c.last_label)
        f.add("mlmon_labels_stale_after_seconds", [m], o.stale_after_seconds)
        for version, conf in sorted(c.confusion.items()):
            for a, p in zip(*np.nonzero(conf), strict=True):
                f.add("mlmon_confusion", [m, version, o.class_names[a], o.class_names[p]], int(conf[a, p]))
        for metric, value in sorted(o.reference_quality.items()):
            f.add("mlmon_model_quality_baseline", [m, metric], value)
        for metric, value in sorted(o.quality_thresholds.items()):
            f.add("mlmon_model_quality_threshold", [m, metric], value)
        for metric, value in o.fairness_thresholds.items():
            f.add("mlmon_fairness_gap_threshold", [m, metric], value)
        q = None if ev is None else ev.quality
        if q is not None:
            for version, values in sorted(q.per_version.items()):
                f.add("mlmon_quality_window_labels", [m, version], q.labelled[version])
                for metric, value in sorted(values.items()):
                    if _finite(value):
                        f.add("mlmon_model_quality", [m, version, metric], value)
            for version, classes in sorted(q.per_class.items()):
                for cls, cls_values in sorted(classes.items()):
                    for metric, value in sorted(cls_values.items()):
                        if _finite(value):
                            f.add("mlmon_model_class_quality", [m, version, cls, metric], value)
            if _finite(q.estimated_accuracy):
                f.add("mlmon_model_quality_estimated", [m, "accuracy"], q.estimated_accuracy)
            for attribute, gaps in sorted(q.fairness.items()):
                for metric, value in sorted(gaps.items()):
                    if _finite(value):
                        f.add("mlmon_fairness_gap", [m, attribute, metric], value)
    if ev is not None and math.isfinite(ev.health):
        f.add("mlmon_model_health_score", [m], ev.health)
        for component, value in sorted(ev.health_components.items()):
            f.add("mlmon_model_health_component", [m, component], value)


def _slo(s: Snapshot, f: _Families) -> None:
    m = s.model
    for slo in s.slos:
        f.add("mlmon_slo_events", [m, slo.name], slo.events)
        f.add("mlmon_slo_bad_events", [m, slo.name], slo.bad)
        f.add("mlmon_slo_objective_ratio", [m, slo.name], slo.objective)
        if slo.threshold_seconds is not None:
            f.add("mlmon_slo_latency_threshold_seconds", [m, slo.name], slo.threshold_seconds)


THEMES: tuple[Callable[[Snapshot, _Families], None], ...] = (_traffic, _features, _drift, _outcomes, _slo)


def render(snapshots: Iterable[Snapshot], unattributed: dict[tuple[str, str], int],
           checkpoint: CheckpointStats | None = None, events: Mapping[str, Any] | None = None) -> list[Metric]:
    """Snapshots → families, build info first. Pure: the same snapshots give the same families."""
    fams = _Families()
    fams.add("mlmon_build_info", [__version__], 1)
    if checkpoint is not None:
        fams.add("mlmon_checkpoint_age_seconds", [], checkpoint.age_seconds)
        fams.add("mlmon_checkpoint_duration_seconds", [], checkpoint.duration_seconds)
        fams.add("mlmon_checkpoint_failures", [], checkpoint.failures)
    for snap in snapshots:
        for theme in THEMES:
            theme(snap, fams)
    for (model, reason), count in sorted(unattributed.items()):
        fams.add("mlmon_ingest_rejected", [model, reason], count)
    if events is not None:
        _events(events, fams)
    return list(fams.all())


def _events(stats: Mapping[str, Any], f: _Families) -> None:
    """Payload-logger event joining (exporter/events.py), client-reported loss and ``mlmon proxy``.

    ``stats`` is ``Service.event_stats()``: ``{"outcomes": {model: {outcome: count}}, "pending": n,
    "pending_bytes": n, "client_loss": {(model, reason): n}, "proxy": None | {...}}``.
    """
    for model, outcomes in sorted(stats["outcomes"].items()):
        for outcome, count in sorted(outcomes.items()):
            f.add("mlmon_events", [model, outcome], count)
    f.add("mlmon_events_pending", [], stats["pending"])
    f.add("mlmon_events_pending_bytes", [], stats["pending_bytes"])
    for (model, reason), count in sorted(stats.get("client_loss", {}).items()):
        f.add("mlmon_client_records_lost", [model, reason], count)
    proxy = stats.get("proxy")
    if proxy:
        for (model, outcome), count in sorted(proxy["requests"].items()):
            f.add("mlmon_proxy_requests", [model, outcome], count)
        for reason, count in sorted(proxy["monitor"].items()):
            f.add("mlmon_proxy_unmonitored", [reason], count)


class MlmonCollector(Collector):
    """Collects every monitor returned by ``monitors()`` at scrape time."""

    def __init__(self, monitors: Callable[[], Iterable[ModelMonitor]],
                 unattributed: Callable[[], dict[tuple[str, str], int]] = dict,
                 on_scrape: Callable[[], None] | None = None,
                 checkpoint: Callable[[], CheckpointStats | None] = lambda: None, *,
                 events: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self._monitors = monitors
        self._checkpoint = checkpoint
        self._unattributed = unattributed
        self._on_scrape = on_scrape
        self._events = events

    def describe(self) -> list[Metric]:
        """Every family of the contract this collector renders (empty), so the registry refuses a
        clashing collector; the self-monitoring ones are exporter/selfmon.py's."""
        return [_family(m) for m in METRICS if m.theme != "self"]

    def collect(self) -> Iterator[Metric]:
        if self._on_scrape is not None:
            self._on_scrape()
        yield from render([m.snapshot() for m in self._monitors()], self._unattributed(), self._checkpoint(),
                          None if self._events is None else self._events())
