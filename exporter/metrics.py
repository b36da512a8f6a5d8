"""Prometheus exposition: a custom collector that renders monitors as metric families.

It reads only counter snapshots and the last immutable evaluation, so a scrape never waits on
statistics. Metric names are the contract with the dashboards and rules (docs/metrics.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.baseline import OTHER, PREDICTION
from exporter.monitor import QUALITY_CHECKS, ModelMonitor
from exporter.outcomes import LABEL_DELAY_BUCKETS

_QUALITY_METRICS = {
    "missing": ("mlmon_feature_missing", "Values that were missing, null, NaN or infinite."),
    "type_errors": ("mlmon_feature_type_errors", "Values of the wrong type, such as a string in a numeric feature."),
    "out_of_range": ("mlmon_feature_out_of_range", "Numeric values outside the baseline's [min, max]."),
    "unexpected": ("mlmon_feature_unexpected_category", "Categories never seen in the baseline."),
}
_DQ_THRESHOLDS = {"missing": "max_missing_ratio", "unexpected_category": "max_unexpected_category_ratio",
                  "out_of_range": "max_out_of_range_ratio"}


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def _render_outcomes(monitor: ModelMonitor, f: _Families) -> None:
    """Label join, confusion counts, quality, estimate and fairness of one model."""
    outcomes = monitor.outcomes
    if not outcomes.enabled:
        return
    m = monitor.name
    counters, pending = outcomes.snapshot()
    f.counter("mlmon_labels", "Labels joined to a prediction.", ["model"], [m], counters.labels)
    f.counter("mlmon_labels_unmatched", "Labels with no pending prediction (unknown, expired or evicted id).",
              ["model"], [m], counters.unmatched)
    f.counter("mlmon_labels_duplicate", "Labels for a prediction that was already labelled.", ["model"], [m],
              counters.duplicates)
    for reason, count in (("ttl", counters.expired_ttl), ("capacity", counters.evicted_capacity)):
        f.counter("mlmon_labels_expired", "Pending predictions dropped before their label came.",
                  ["model", "reason"], [m, reason], count)
    f.gauge("mlmon_labels_pending", "Predictions waiting for their label.", ["model"], [m], pending)
    cumulative, buckets = 0, []
    for le, count in zip([*LABEL_DELAY_BUCKETS, math.inf], counters.delay_buckets.tolist(), strict=True):
        cumulative += count
        buckets.append(("+Inf" if le == math.inf else repr(le), cumulative))
    f.get(HistogramMetricFamily, "mlmon_label_delay_seconds", "Time from prediction to its label.",
          ["model"]).add_metric([m], buckets, counters.delay_sum)
    if counters.last_label:
        f.gauge("mlmon_last_label_timestamp_seconds", "Unix time the last label was joined.", ["model"], [m],
                counters.last_label)
    f.gauge("mlmon_labels_stale_after_seconds", "Configured time without labels before the feed counts as stale.",
            ["model"], [m], monitor.config.labels.stale_after_seconds)
    names = [*outcomes.classes, OTHER]
    for version, conf in sorted(counters.confusion.items()):
        for a, p in zip(*np.nonzero(conf), strict=True):
            f.counter("mlmon_confusion", "Joined outcomes by actual and predicted class (mergeable).",
                      ["model", "version", "actual", "predicted"], [m, version, names[a], names[p]], int(conf[a, p]))
    for metric, value in sorted(monitor.baseline.reference_quality.items()):
        f.gauge("mlmon_model_quality_baseline", "Model quality on the baseline data.", ["model", "metric"],
                [m, metric], value)
    for metric, value in sorted(outcomes.thresholds(monitor.baseline).items()):
        f.gauge("mlmon_model_quality_threshold",
                "Alert threshold: below it for accuracy/precision/recall/f1, above it for error metrics.",
                ["model", "metric"], [m, metric], value)
    if outcomes.attributes:
        f.gauge("mlmon_fairness_gap_threshold", "Configured alert threshold for fairness gaps.", ["model", "metric"],
                [m, "demographic_parity_difference"], monitor.config.fairness.threshold)
        f.gauge("mlmon_fairness_gap_threshold", "", ["model", "metric"],
                [m, "equal_opportunity_difference"], monitor.config.fairness.threshold)
    q = outcomes.evaluation
    if q is None:
        return
    for version, values in sorted(q.per_version.items()):
        f.gauge("mlmon_quality_window_labels", "Labelled predictions in the quality window.", ["model", "version"],
                [m, version], q.labelled[version])
        for metric, value in sorted(values.items()):
            if _finite(value):
                f.gauge("mlmon_model_quality", "Model quality over the window, from joined labels.",
                        ["model", "version", "metric"], [m, version, metric], value)
    for version, classes in sorted(q.per_class.items()):
        for cls, values in sorted(classes.items()):
            for metric, value in sorted(values.items()):
                if _finite(value):
                    f.gauge("mlmon_model_class_quality", "Per-class precision, recall and F1 over the window.",
                            ["model", "version", "class", "metric"], [m, version, cls, metric], value)
    if _finite(q.estimated_accuracy):
        f.gauge("mlmon_model_quality_estimated", "Label-free estimate from the predicted-class probability.",
                ["model", "metric"], [m, "accuracy"], q.estimated_accuracy)
    for attribute, gaps in sorted(q.fairness.items()):
        for metric, value in sorted(gaps.items()):
            if _finite(value):
                f.gauge("mlmon_fairness_gap", "Max minus min rate across groups with enough samples.",
                        ["model", "attribute", "metric"], [m, attribute, metric], value)


def _render_events(stats: Mapping[str, Any], f: _Families) -> None:
    """Payload-logger event joining (exporter/events.py): every outcome per model, and the buffer.

    ``stats`` is ``{"outcomes": {model: {outcome: count}}, "pending": n, "pending_bytes": n}``.
    """
    for model, outcomes in sorted(stats["outcomes"].items()):
        for outcome, count in outcomes.items():
            f.counter("mlmon_events", "Logged inference events (CloudEvents) by joiner outcome: paired, unanswered, "
                      "orphan_response, duplicate, ignored_component, unknown_model, row_mismatch, error_response, "
                      "invalid_prediction (records), evicted_request, evicted_response.",
                      ["model", "outcome"], [model, outcome], count)
    f.gauge("mlmon_events_pending", "Request or response events waiting for their other half.", [], [],
            stats["pending"])
    f.gauge("mlmon_events_pending_bytes", "Estimated memory held by events waiting for their other half.", [], [],
            stats["pending_bytes"])
    _render_client_loss(stats.get("client_loss", {}), f)
    if stats.get("proxy"):
        _render_proxy(stats["proxy"], f)


def _render_proxy(proxy: Mapping[str, Any], f: _Families) -> None:
    """``mlmon proxy``: requests forwarded by outcome, and exchanges the monitor could not use."""
    for (model, outcome), count in sorted(proxy["requests"].items()):
        f.counter("mlmon_proxy_requests", "Requests forwarded to the upstream, by outcome: 2xx..5xx (the upstream's "
                  "status), timeout (answered 504), unreachable (answered 502).", ["model", "outcome"],
                  [model, outcome], count)
    for reason, count in sorted(proxy["monitor"].items()):
        f.counter("mlmon_proxy_unmonitored", "Forwarded exchanges not monitored: queue_full, monitor_error, "
                  "not_an_inference, unreadable_response, unknown_model.", ["reason"], [reason], count)


def _render_client_loss(loss: Mapping[tuple[str, str], int], f: _Families) -> None:
    """Records Python clients (exporter/client.py) could not deliver, as they reported them."""
    for (model, reason), count in sorted(loss.items()):
        f.counter("mlmon_client_records_lost", "Records a client lost before they reached mlmon: dropped (queue "
                  "full or unsent at close), failed (post failed), unserialisable.", ["model", "reason"],
                  [model, reason], count)


class MlmonCollector(Collector):
    """Collects every monitor returned by ``monitors()`` at scrape time."""

    def __init__(self, monitors: Callable[[], Iterable[ModelMonitor]],
                 unattributed: Callable[[], dict[tuple[str, str], int]] = dict,
                 on_scrape: Callable[[], None] | None = None, *,
                 events: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self._monitors = monitors
        self._unattributed = unattributed
        self._on_scrape = on_scrape
        self._events = events

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families depend on the configured models

    def collect(self) -> Iterator[Metric]:
        if self._on_scrape is not None:
            self._on_scrape()
        build = GaugeMetricFamily("mlmon_build_info", "mlmon build; always 1.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        fams = _Families()
        for monitor in self._monitors():
            _render(monitor, fams)
        for (model, reason), count in sorted(self._unattributed().items()):
            fams.counter("mlmon_ingest_rejected", "Records mlmon refused, by reason.", ["model", "reason"],
                         [model, reason], count)
        if self._events is not None:
            _render_events(self._events(), fams)
        yield from fams.all()


class _Families:
    """Creates each family once and hands it back by name, so families stay grouped."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def get(self, kind: type, name: str, doc: str, labels: list[str], **kw: Any) -> Any:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = kind(name, doc, labels=labels, **kw)
        return fam

    def gauge(self, name: str, doc: str, labels: list[str], values: list[str], value: float, **kw: Any) -> None:
        self.get(GaugeMetricFamily, name, doc, labels, **kw).add_metric(values, value)

    def counter(self, name: str, doc: str, labels: list[str], values: list[str], value: float) -> None:
        self.get(CounterMetricFamily, name, doc, labels).add_metric(values, value)

    def all(self) -> Iterable[Metric]:
        return self._by_name.values()


def _render(monitor: ModelMonitor, f: _Families) -> None:
    m = monitor.name
    snap = monitor.snapshot()
    cfg = monitor.config
    mv = ["model", "version"]
    bounds = list(cfg.latency_buckets)
    for version, s in sorted(snap.versions.items()):
        f.counter("mlmon_predictions", "Prediction records ingested.", mv, [m, version], s.predictions)
        f.counter("mlmon_prediction_errors", "Records the model server marked as failed.", mv, [m, version], s.errors)
        cumulative, buckets = 0, []
        for le, count in zip([*bounds, math.inf], s.latency_buckets.tolist(), strict=True):
            cumulative += count
            buckets.append(("+Inf" if le == math.inf else repr(float(le)), cumulative))
        f.get(HistogramMetricFamily, "mlmon_prediction_latency_seconds",
              "Model latency as reported by the model server.", mv).add_metric(
            [m, version], buckets, s.latency_sum)
        f.gauge("mlmon_last_prediction_timestamp_seconds", "Unix time of the last record ingested.",
                mv, [m, version], s.last_seen)
        f.gauge("mlmon_model_version_info", "Model versions seen; always 1.", mv, [m, version], 1)
        f.gauge("mlmon_model_version_first_seen_timestamp_seconds", "Unix time a model version was first seen.",
                mv, [m, version], s.first_seen)
        for cls, count in sorted(s.classes.items()):
            f.counter("mlmon_prediction_class", "Predicted classes.", ["model", "version", "class"],
                      [m, version, cls], count)
    f.counter("mlmon_ingest_rejected", "Records mlmon refused, by reason.", ["model", "reason"], [m, "invalid_record"],
              snap.rejected.get("invalid_record", 0))
    for reason, count in sorted(snap.rejected.items()):
        if reason != "invalid_record":
            f.counter("mlmon_ingest_rejected", "", ["model", "reason"], [m, reason], count)
    f.counter("mlmon_unknown_features", "Values of feature names the baseline does not know.", ["model"], [m],
              snap.unknown_features)

    mf = ["model", "feature"]
    for i, profile in enumerate(monitor.profiles):
        fine = snap.cumulative_bins[monitor.offsets[i]:monitor.offsets[i + 1]]
        labels = profile.coarse_labels()
        base = profile.coarse_counts(profile.fine_counts)
        base_total = base.sum()
        for label, count, b in zip(labels, profile.coarse_counts(fine).tolist(), base.tolist(), strict=True):
            f.counter("mlmon_feature_bin", "Values per coarse bin (mergeable across replicas).",
                      ["model", "feature", "bin"], [m, profile.name, label], count)
            f.gauge("mlmon_baseline_bin_ratio", "Baseline share of each coarse bin.",
                    ["model", "feature", "bin"], [m, profile.name, label], b / base_total if base_total else 0.0)
        if profile.name == PREDICTION:
            continue
        for j, check in enumerate(QUALITY_CHECKS):
            name, doc = _QUALITY_METRICS[check]
            f.counter(name, doc, mf, [m, profile.name], int(snap.quality[i, j]))

    dq = cfg.data_quality
    for check, attr in _DQ_THRESHOLDS.items():
        f.gauge("mlmon_data_quality_threshold_ratio", "Configured alert threshold for a data-quality rate.",
                ["model", "check"], [m, check], getattr(dq, attr))

    f.gauge("mlmon_predictions_stale_after_seconds", "Configured time without predictions before data counts as stale.",
            ["model"], [m], cfg.stale_after_seconds)
    f.gauge("mlmon_window_samples", "Records in the current window.", ["model"], [m], snap.window_samples)
    f.gauge("mlmon_window_min_samples", "Records a window needs before drift is reported.", ["model"], [m],
            cfg.window.min_samples)
    ev = snap.evaluation
    mfm = ["model", "feature", "method"]
    for profile in monitor.profiles:
        detection = cfg.drift.detection_for(profile.name, profile.kind)
        f.gauge("mlmon_feature_drift_threshold",
                "Configured drift threshold (for chi2, the p-value below which drift is detected).",
                mfm, [m, profile.name, detection], cfg.drift.threshold_for(profile.name, detection))
    if ev is not None:
        f.gauge("mlmon_evaluation_timestamp_seconds", "Unix time of the last drift evaluation.", ["model"], [m],
                ev.timestamp)
        f.gauge("mlmon_evaluation_duration_seconds", "Time the last evaluation took.", ["model"], [m],
                ev.duration_seconds)
        f.gauge("mlmon_drifted_features", "Features (not the prediction) whose drift is over threshold.",
                ["model"], [m], len(ev.drifted))
        for fd in ev.features:
            for method, score in fd.scores.items():
                if _finite(score):
                    f.gauge("mlmon_feature_drift_score", "Drift of the window against the baseline.",
                            mfm, [m, fd.feature, method], score)
            for method, p in fd.pvalues.items():
                if _finite(p):
                    f.gauge("mlmon_feature_drift_pvalue", "p-value of the drift test.", mfm,
                            [m, fd.feature, method], p)
            if fd.detected is not None:
                f.gauge("mlmon_feature_drift_detected", "1 if the feature's drift is over its threshold.",
                        mf, [m, fd.feature], int(fd.detected))
    _render_outcomes(monitor, f)
    if ev is not None and math.isfinite(ev.health):
        f.gauge("mlmon_model_health_score", "Composite health in [0, 1]; see the README for the formula.",
                ["model"], [m], ev.health)
        for component, value in sorted(ev.health_components.items()):
            f.gauge("mlmon_model_health_component", "Inputs of the health score, each in [0, 1].",
                    ["model", "component"], [m, component], value)
    correctness = monitor.outcomes.snapshot()[0].slo
    for slo in cfg.slos:
        events, bad = correctness.get(slo.name) or snap.slo.get(slo.name, (0, 0))
        ms = ["model", "slo"]
        f.counter("mlmon_slo_events", "SLI events counted for the SLO.", ms, [m, slo.name], events)
        f.counter("mlmon_slo_bad_events", "SLI events that missed the SLO.", ms, [m, slo.name], bad)
        f.gauge("mlmon_slo_objective_ratio", "Configured SLO objective (share of good events).", ms,
                [m, slo.name], slo.objective)
        if slo.threshold_seconds is not None:
            f.gauge("mlmon_slo_latency_threshold_seconds", "Latency threshold of a latency SLO.", ms,
                    [m, slo.name], slo.threshold_seconds)

