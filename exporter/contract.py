"""The metric contract: every metric mlmon exposes, declared once.

Dashboards, alert rules and people's own queries depend on these names, types and labels, so
they live here and nowhere else: the collector builds its families from this catalogue (and
fails on a name it lacks), ``describe()`` returns it, the tests check the exposition, the rules
and the dashboards against it, and ``docs/metrics.md`` is generated from it
(``python docs/gen_metrics.py``). No Prometheus import: the catalogue is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
THEMES = ("build", "self", "traffic", "features", "drift", "outcomes", "slo", "events")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    """Family name as ``prometheus_client`` takes it: counters without ``_total``."""
    kind: Kind
    labels: tuple[str, ...]
    unit: str
    """Base unit (``seconds``, ``ratio``, ``timestamp``…) or ``""`` for a plain count or score."""
    help: str
    theme: str
    doc: str = ""
    """Longer note for docs/metrics.md (label values, when the series is absent)."""

    @property
    def exposed(self) -> str:
        """The name as it appears in PromQL: counters carry ``_total``; histograms their base name."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    @property
    def series(self) -> tuple[str, ...]:
        """Every sample name this family writes to the exposition."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


def _m(name: str, kind: Kind, labels: str, unit: str, help: str, theme: str, doc: str = "") -> MetricSpec:
    return MetricSpec(name, kind, tuple(labels.split()), unit, help, theme, doc)


METRICS: tuple[MetricSpec, ...] = (
    _m("mlmon_build_info", "gauge", "version", "", "mlmon build; always 1.", "build"),
    # ---- self-monitoring (exporter/selfmon.py; prometheus_client's process_*/python_* are not ours)
    _m("mlmon_scrape_duration_seconds", "histogram", "", "seconds",
       "Time mlmon took to render /metrics (collect and encode); an exposition counts in the next one.", "self",
       "Observed by `exporter/selfmon.py`, not the collector. The sidecar also exposes prometheus_client's "
       "`process_*`, `python_info` and `python_gc_*` families, which are not part of this contract."),
    _m("mlmon_checkpoint_age_seconds", "gauge", "", "seconds", "Seconds since the last successful checkpoint.",
       "build", "Present only when `state.dir` is set; counts from the start until the first checkpoint."),
    _m("mlmon_checkpoint_duration_seconds", "gauge", "", "seconds", "Time the last checkpoint took to write.",
       "build", "Present only when `state.dir` is set."),
    _m("mlmon_checkpoint_failures", "counter", "", "", "Checkpoints that failed to write.", "build",
       "Present only when `state.dir` is set; the reason is logged."),
    # ---- traffic
    _m("mlmon_predictions", "counter", "model version", "", "Prediction records ingested.", "traffic"),
    _m("mlmon_prediction_errors", "counter", "model version", "", "Records the model server marked as failed.",
       "traffic"),
    _m("mlmon_prediction_latency_seconds", "histogram", "model version", "seconds",
       "Model latency as reported by the model server.", "traffic",
       "Buckets from `latency_buckets`; only records that report a latency are observed."),
    _m("mlmon_last_prediction_timestamp_seconds", "gauge", "model version", "timestamp",
       "Unix time of the last record ingested.", "traffic", "Data freshness."),
    _m("mlmon_model_version_info", "gauge", "model version", "", "Model versions seen; always 1.", "traffic"),
    _m("mlmon_model_version_first_seen_timestamp_seconds", "gauge", "model version", "timestamp",
       "Unix time a model version was first seen.", "traffic", "Deploy marker."),
    _m("mlmon_prediction_class", "counter", "model version class", "", "Predicted classes.", "traffic",
       "Baseline classes plus `__other__`; without a class list, the first 100 distinct values."),
    _m("mlmon_ingest_rejected", "counter", "model reason", "", "Records mlmon refused, by reason.", "traffic",
       "`invalid_record`, `invalid_label`; `model=\"__unknown__\"` for `unknown_model`, `malformed_json`, "
       "`invalid_payload`, `invalid_event`, `payload_too_large`, `unsupported_media_type` (a POST whose "
       "Content-Type is not JSON, answered 415)."),
    _m("mlmon_predictions_stale_after_seconds", "gauge", "model", "seconds",
       "Configured time without predictions before data counts as stale.", "traffic", "`traffic.stale_after`."),
    # ---- features: distributions and data quality
    _m("mlmon_feature_bin", "counter", "model feature bin", "", "Values per coarse bin (mergeable across replicas).",
       "features"),
    _m("mlmon_baseline_bin_ratio", "gauge", "model feature bin", "ratio", "Baseline share of each coarse bin.",
       "features", "With `mlmon_feature_bin_total`, absent when `drift.export_bins` is false."),
    _m("mlmon_baseline_samples", "gauge", "model feature", "",
       "Baseline rows with a value of the feature (N of the two-sample tests).", "features",
       "`mlmon_baseline_bin_ratio` × this = the baseline's bin counts, which the fleet drift rules need."),
    _m("mlmon_feature_missing", "counter", "model feature", "", "Values that were missing, null, NaN or infinite.",
       "features"),
    _m("mlmon_feature_type_errors", "counter", "model feature", "",
       "Values of the wrong type, such as a string in a numeric feature.", "features"),
    _m("mlmon_feature_out_of_range", "counter", "model feature", "",
       "Numeric values outside the baseline's [min, max].", "features"),
    _m("mlmon_feature_unexpected_category", "counter", "model feature", "", "Categories never seen in the baseline.",
       "features"),
    _m("mlmon_unknown_features", "counter", "model", "", "Values of feature names the baseline does not know.",
       "features", "The names are listed by `GET /v1/models`."),
    _m("mlmon_limit_hits", "counter", "model limit", "", "Times a cap on client-controlled input was hit.",
       "traffic", "`limit` is the config key under `limits:`: `max_versions` (the least recently seen version "
       "is retired), `max_label_length`, `max_unknown_feature_names`, `max_classes` (the value becomes "
       "`__other__` or is not listed)."),
    _m("mlmon_data_quality_threshold_ratio", "gauge", "model check", "ratio",
       "Configured alert threshold for a data-quality rate.", "features",
       "`check` is `missing`, `unexpected_category` or `out_of_range` (`data_quality.max_*_ratio`)."),
    # ---- drift
    _m("mlmon_window_samples", "gauge", "model", "", "Records in the current window.", "drift"),
    _m("mlmon_window_min_samples", "gauge", "model", "", "Records a window needs before drift is reported.", "drift"),
    _m("mlmon_feature_drift_threshold", "gauge", "model feature method", "",
       "Threshold in force for the detection method at the full window's sample size.", "drift",
       "`method` is the feature's detection method. With `auto` thresholds it is the null quantile at the "
       "window's n (raised to the relevance floor), so it falls as the window fills; absent below "
       "`min_samples`. A fixed chi2 p-value is exported as the statistic it corresponds to."),
    _m("mlmon_feature_drift_recent_score", "gauge", "model feature method", "",
       "Drift of the recent window against the baseline.", "drift",
       "Detection method only; absent when the recent window (`drift.recent_window`) holds fewer than "
       "`min_samples` values."),
    _m("mlmon_feature_drift_recent_threshold", "gauge", "model feature method", "",
       "Threshold in force for the detection method at the recent window's sample size.", "drift"),
    _m("mlmon_feature_drift_min_effect", "gauge", "model feature method", "",
       "Relevance floor: the smallest change that counts as drift.", "drift",
       "In the method's own units; for chi2, Cohen's w (the floor on the statistic is n_eff × w²)."),
    _m("mlmon_feature_drift_fleet_critical", "gauge", "model feature window", "",
       "Chi-square critical value on the coarse bins at the configured false-alarm rate (fleet rules).", "drift",
       "`window` is `full` or `recent`; the fleet rules compare the chi-square of the summed bin counters "
       "with max(this, n_eff × w²)."),
    _m("mlmon_feature_drift_fleet_min_effect", "gauge", "model feature", "",
       "Relevance floor of the fleet chi-square (Cohen's w).", "drift"),
    _m("mlmon_recent_window_samples", "gauge", "model", "", "Records in the recent window tested beside the full one.",
       "drift"),
    _m("mlmon_evaluation_timestamp_seconds", "gauge", "model", "timestamp", "Unix time of the last drift evaluation.",
       "drift"),
    _m("mlmon_evaluation_duration_seconds", "gauge", "model", "seconds", "Time the last evaluation took.", "drift"),
    _m("mlmon_drifted_features", "gauge", "model", "", "Features (not the prediction) whose drift is over threshold.",
       "drift"),
    _m("mlmon_feature_drift_score", "gauge", "model feature method", "",
       "Drift of the full window against the baseline.", "drift",
       "Absent below `min_samples`; the prediction is the feature `__prediction__`."),
    _m("mlmon_feature_drift_pvalue", "gauge", "model feature method", "ratio", "p-value of the drift test.", "drift",
       "`ks` and `chi2` only."),
    _m("mlmon_feature_drift_detected", "gauge", "model feature", "",
       "1 if the feature's drift is over its threshold in either window.", "drift",
       "This replica's verdict, for debugging; the fleet rules decide what pages."),
    # ---- outcomes: labels, model quality, fairness, health
    _m("mlmon_labels", "counter", "model", "", "Labels joined to a prediction.", "outcomes"),
    _m("mlmon_labels_unmatched", "counter", "model", "",
       "Labels with no pending prediction (unknown, expired or evicted id).", "outcomes"),
    _m("mlmon_labels_duplicate", "counter", "model", "", "Labels for a prediction that was already labelled.",
       "outcomes"),
    _m("mlmon_labels_expired", "counter", "model reason", "", "Pending predictions dropped before their label came.",
       "outcomes", "`reason` is `ttl` or `capacity`."),
    _m("mlmon_labels_pending", "gauge", "model", "", "Predictions waiting for their label.", "outcomes"),
    _m("mlmon_labels_held", "gauge", "model", "",
       "Labels that came before their prediction, waiting up to labels.early_hold.", "outcomes",
       "Bounded by `labels.max_early`; a held label that outlives the hold counts as unmatched."),
    _m("mlmon_predictions_unjoinable", "counter", "model reason", "",
       "Predictions with an id that no label can join, by reason.", "outcomes",
       "`duplicate_id` (a repeated id; the first copy is kept), `no_prediction`, `wrong_type` (e.g. a string "
       "for a regression model); their labels count as unmatched."),
    _m("mlmon_label_delay_seconds", "histogram", "model", "seconds", "Time from prediction to its label.",
       "outcomes"),
    _m("mlmon_last_label_timestamp_seconds", "gauge", "model", "timestamp", "Unix time the last label was joined.",
       "outcomes", "Absent until the first label."),
    _m("mlmon_labels_stale_after_seconds", "gauge", "model", "seconds",
       "Configured time without labels before the feed counts as stale.", "outcomes", "`labels.stale_after`."),
    _m("mlmon_confusion", "counter", "model version actual predicted", "",
       "Joined outcomes by actual and predicted class (mergeable).", "outcomes"),
    _m("mlmon_model_quality_baseline", "gauge", "model metric", "", "Model quality on the baseline data.",
       "outcomes"),
    _m("mlmon_model_quality_threshold", "gauge", "model metric", "",
       "Alert threshold: below it for accuracy/precision/recall/f1, above it for error metrics.", "outcomes"),
    _m("mlmon_fairness_gap_threshold", "gauge", "model metric", "ratio",
       "Configured alert threshold for fairness gaps.", "outcomes"),
    _m("mlmon_quality_window_labels", "gauge", "model version", "", "Labelled predictions in the quality window.",
       "outcomes"),
    _m("mlmon_model_quality", "gauge", "model version metric", "", "Model quality over the window, from joined labels.",
       "outcomes"),
    _m("mlmon_model_class_quality", "gauge", "model version class metric", "",
       "Per-class precision, recall and F1 over the window.", "outcomes"),
    _m("mlmon_model_quality_estimated", "gauge", "model metric", "",
       "Label-free estimate from the predicted-class probability.", "outcomes", "`metric=\"accuracy\"`."),
    _m("mlmon_fairness_gap", "gauge", "model attribute metric", "ratio",
       "Max minus min rate across groups with enough samples.", "outcomes"),
    _m("mlmon_model_health_score", "gauge", "model", "ratio",
       "Composite health in [0, 1]; see the README for the formula.", "outcomes"),
    _m("mlmon_model_health_component", "gauge", "model component", "ratio",
       "Inputs of the health score, each in [0, 1].", "outcomes"),
    # ---- SLOs
    _m("mlmon_slo_events", "counter", "model slo", "", "SLI events counted for the SLO.", "slo",
       "Latency: records with a reported latency; availability: records; correctness: joined labels."),
    _m("mlmon_slo_bad_events", "counter", "model slo", "", "SLI events that missed the SLO.", "slo",
       "Latency: above the threshold; availability: marked failed; correctness: wrong or off by more than the "
       "tolerance."),
    _m("mlmon_slo_objective_ratio", "gauge", "model slo", "ratio", "Configured SLO objective (share of good events).",
       "slo"),
    _m("mlmon_slo_latency_threshold_seconds", "gauge", "model slo", "seconds", "Latency threshold of a latency SLO.",
       "slo"),
    # ---- events: payload loggers (exporter/events.py), client-reported loss, mlmon proxy
    _m("mlmon_events", "counter", "model outcome", "",
       "Logged inference events (CloudEvents) by joiner outcome.", "events",
       "`outcome`: paired, unanswered, orphan_response, duplicate, ignored_component, unknown_model "
       "(model `__unknown__`), row_mismatch, error_response, invalid_prediction (counts records), "
       "evicted_request, evicted_response."),
    _m("mlmon_events_pending", "gauge", "", "", "Request or response events waiting for their other half.",
       "events", "Process-wide: one joiner serves every model."),
    _m("mlmon_events_pending_bytes", "gauge", "", "bytes",
       "Estimated memory held by events waiting for their other half.", "events",
       "Capped by `events.max_pending_bytes`."),
    _m("mlmon_client_records_lost", "counter", "model reason", "",
       "Records a Python client lost before they reached mlmon, as the client reported them.", "events",
       "`reason`: dropped (queue full or unsent at close), failed (post failed), unserialisable."),
    _m("mlmon_proxy_requests", "counter", "model outcome", "", "Requests `mlmon proxy` forwarded, by outcome.",
       "events", "`outcome`: 2xx..5xx (the upstream's status), timeout (answered 504), unreachable (answered 502)."),
    _m("mlmon_proxy_unmonitored", "counter", "reason", "", "Exchanges `mlmon proxy` forwarded but could not monitor.",
       "events", "`reason`: queue_full, monitor_error, not_an_inference, unreadable_response, unknown_model."),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def spec(name: str) -> MetricSpec:
    """The declaration of a family; a ``KeyError`` names a metric missing from the catalogue."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in exporter/contract.py; declare it there first") from None


def series_names() -> dict[str, MetricSpec]:
    """Every exposed sample name → its family (for checking PromQL that reads ``_bucket`` etc.)."""
    return {s: m for m in METRICS for s in m.series}
