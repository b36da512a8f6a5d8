"""Prometheus exposition: a custom collector that maps monitor snapshots to metric families.

It reads only ``ModelMonitor.snapshot()`` (counters, resolved thresholds and the last immutable
evaluation), so a scrape never waits on statistics and every number has one source. Families are
declared in :mod:`exporter.contract`; a name missing there fails the scrape in tests, not in a
dashboard. One function per theme (traffic, features, drift, outcomes, SLOs), grouped by how often
their samples change: settings (never, after start), evaluated (once per evaluation) and live
counters. ``render`` builds prometheus_client families from all of them on every call (the reference
path); :class:`TextCache` writes the same samples as exposition text and renders settings once per
monitor and evaluated samples once per evaluation, so a scrape formats only the live counters.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.contract import METRICS, MetricSpec, spec
from exporter.exposition import Chunk, Part
from exporter.monitor import Evaluation, ModelMonitor, Snapshot
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


class Sink(Protocol):
    """Where a theme writes its samples: prometheus_client families or exposition text."""

    def add(self, name: str, labels: Sequence[str], value: float) -> None: ...

    def histogram(self, name: str, labels: Sequence[str], buckets: list[tuple[str, float]],
                  total: float) -> None: ...

    def series(self, name: str, labels: Sequence[str], rows: Sequence[tuple[str, ...]],
               values: Sequence[float]) -> None:
        """One sample per row: ``labels`` shared, each row the values of the family's remaining labels."""


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

    def series(self, name: str, labels: Sequence[str], rows: Sequence[tuple[str, ...]],
               values: Sequence[float]) -> None:
        for row, value in zip(rows, values, strict=True):
            self.add(name, [*labels, *row], value)

    def all(self) -> Iterable[Metric]:
        return self._by_name.values()


def _traffic(s: Snapshot, f: Sink) -> None:
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


def _features(s: Snapshot, f: Sink) -> None:
    """Coarse bins (cumulative counts) and data-quality counts per feature."""
    m = s.model
    f.add("mlmon_unknown_features", [m], s.unknown_features)
    if s.export_bins:
        f.series("mlmon_feature_bin", [m], s.bin_rows, s.bin_counts)
    checked = [fc for fc in s.features if fc.data_quality is not None]  # the prediction is not a feature
    rows = tuple((fc.feature,) for fc in checked)
    for check, metric in _DATA_QUALITY_METRICS.items():
        f.series(metric, [m], rows, [fc.data_quality[check] for fc in checked])  # type: ignore[index]


def _window(s: Snapshot, f: Sink) -> None:
    f.add("mlmon_window_samples", [s.model], s.window_samples)


def _drift(s: Snapshot, f: Sink) -> None:
    """The last evaluation: scores, thresholds in force, flags, fleet critical values."""
    m = s.model
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


def _outcomes(s: Snapshot, f: Sink) -> None:
    """Label join and confusion counts."""
    m = s.model
    o = s.outcomes
    if o is None:
        return
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
    for version, conf in sorted(c.confusion.items()):
        for a, p in zip(*np.nonzero(conf), strict=True):
            f.add("mlmon_confusion", [m, version, o.class_names[a], o.class_names[p]], int(conf[a, p]))


def _quality(s: Snapshot, f: Sink) -> None:
    """Quality, estimate and fairness of the last evaluation; then the health score."""
    m = s.model
    ev = s.evaluation
    if ev is None:
        return
    q = ev.quality if s.outcomes is not None else None
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
    if math.isfinite(ev.health):
        f.add("mlmon_model_health_score", [m], ev.health)
        for component, value in sorted(ev.health_components.items()):
            f.add("mlmon_model_health_component", [m, component], value)


def _slo(s: Snapshot, f: Sink) -> None:
    m = s.model
    for slo in s.slos:
        f.add("mlmon_slo_events", [m, slo.name], slo.events)
        f.add("mlmon_slo_bad_events", [m, slo.name], slo.bad)


def _settings(s: Snapshot, f: Sink) -> None:
    """What a monitor fixes at start from its config and baseline: baseline bins and sizes,
    thresholds, objectives, staleness limits. Rendered once per monitor by the cached exposition."""
    m = s.model
    f.add("mlmon_predictions_stale_after_seconds", [m], s.stale_after_seconds)
    for fc in s.features:
        f.add("mlmon_baseline_samples", [m, fc.feature], fc.baseline_samples)
    if s.export_bins:
        f.series("mlmon_baseline_bin_ratio", [m], s.bin_rows, s.bin_baseline_ratio)
    for check, ratio in s.data_quality_thresholds.items():
        f.add("mlmon_data_quality_threshold_ratio", [m, check], ratio)
    f.add("mlmon_window_min_samples", [m], s.window_min_samples)
    o = s.outcomes
    if o is not None:
        f.add("mlmon_labels_stale_after_seconds", [m], o.stale_after_seconds)
        for metric, value in sorted(o.reference_quality.items()):
            f.add("mlmon_model_quality_baseline", [m, metric], value)
        for metric, value in sorted(o.quality_thresholds.items()):
            f.add("mlmon_model_quality_threshold", [m, metric], value)
        for metric, value in o.fairness_thresholds.items():
            f.add("mlmon_fairness_gap_threshold", [m, metric], value)
    for slo in s.slos:
        f.add("mlmon_slo_objective_ratio", [m, slo.name], slo.objective)
        if slo.threshold_seconds is not None:
            f.add("mlmon_slo_latency_threshold_seconds", [m, slo.name], slo.threshold_seconds)


Theme = Callable[[Snapshot, Sink], None]
SETTINGS: tuple[Theme, ...] = (_settings,)
"""Fixed for a monitor's lifetime (its config and baseline never change)."""
EVALUATED: tuple[Theme, ...] = (_drift, _quality)
"""Read only ``Snapshot.evaluation``: they change when an evaluation is published."""
LIVE: tuple[Theme, ...] = (_traffic, _features, _window, _outcomes, _slo)
"""Counters that move between evaluations."""
THEMES: tuple[Theme, ...] = (*SETTINGS, *EVALUATED, *LIVE)


def render(snapshots: Iterable[Snapshot], unattributed: dict[tuple[str, str], int],
           checkpoint: CheckpointStats | None = None, events: Mapping[str, Any] | None = None) -> list[Metric]:
    """Snapshots → families, build info first. Pure: the same snapshots give the same families.

    The uncached path: prometheus_client encodes these families; :class:`TextCache` writes the
    same samples as text and is tested against this."""
    fams = _Families()
    _process(fams, checkpoint)
    for snap in snapshots:
        for theme in THEMES:
            theme(snap, fams)
    _process_tail(fams, unattributed, events)
    return list(fams.all())


def _process(f: Sink, checkpoint: CheckpointStats | None) -> None:
    f.add("mlmon_build_info", [__version__], 1)
    if checkpoint is not None:
        f.add("mlmon_checkpoint_age_seconds", [], checkpoint.age_seconds)
        f.add("mlmon_checkpoint_duration_seconds", [], checkpoint.duration_seconds)
        f.add("mlmon_checkpoint_failures", [], checkpoint.failures)


def _process_tail(f: Sink, unattributed: dict[tuple[str, str], int], events: Mapping[str, Any] | None) -> None:
    for (model, reason), count in sorted(unattributed.items()):
        f.add("mlmon_ingest_rejected", [model, reason], count)
    if events is not None:
        _events(events, f)


def _events(stats: Mapping[str, Any], f: Sink) -> None:
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


# ---- exposition text, cached by how often it changes --------------------------------------

_SAMPLE = {m.name: m.series[0] for m in METRICS if m.kind != "histogram"}
"""Family → its one sample name (counters carry ``_total``)."""
_ORDER = tuple(m.name for m in METRICS if m.theme != "self")
"""Families in the order the text exposition writes them: the contract's."""
MAX_PREFIXES = 200_000
"""Cached label sets; beyond this (retired versions, gone evaluations) the cache starts again."""


def _escape_label(value: str) -> str:
    """Label values as both text formats escape them (prometheus_client, ``allow-utf-8``)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _prefix(sample: str, names: Sequence[str], values: Sequence[str]) -> str:
    """``name{a="x",b="y"}``, label names sorted as prometheus_client writes them."""
    if not names:
        return sample
    pairs = sorted(zip(names, values, strict=True))
    return sample + "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs) + "}"


def _value(value: float) -> str:
    """``floatToGoString`` with a fast path for the common small integer counts."""
    if type(value) is int and -1_000_000_000_000 < value < 1_000_000:
        return f"{value}.0"
    return floatToGoString(value)


def header(name: str, openmetrics: bool) -> str:
    """``# HELP`` and ``# TYPE`` of a family, as prometheus_client writes them in either format."""
    declared = spec(name)
    if openmetrics:
        doc = declared.help.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
        return f"# HELP {name} {doc}\n# TYPE {name} {declared.kind}\n"
    exposed = declared.exposed
    doc = declared.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {exposed} {doc}\n# TYPE {exposed} {declared.kind}\n"


class _Lines:
    """A :class:`Sink` writing sample lines per family; label prefixes come from a shared cache."""

    __slots__ = ("_prefixes", "_series", "lines")

    def __init__(self, prefixes: dict[tuple[str, tuple[str, ...]], str],
                 series: dict[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], list[str]]) -> None:
        self.lines: dict[str, list[str]] = {}
        self._prefixes = prefixes
        self._series = series

    def _line(self, sample: str, names: Sequence[str], labels: tuple[str, ...], value: float) -> str:
        key = (sample, labels)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = _prefix(sample, names, labels)
        return f"{prefix} {_value(value)}\n"

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        sample = _SAMPLE.get(name)
        if sample is None:
            raise TypeError(f"{spec(name).name} is a histogram; use histogram()")
        line = self._line(sample, spec(name).labels, tuple(labels), value)
        out = self.lines.get(name)
        if out is None:
            self.lines[name] = [line]
        else:
            out.append(line)

    def histogram(self, name: str, labels: Sequence[str], buckets: list[tuple[str, float]], total: float) -> None:
        declared = spec(name)
        if declared.kind != "histogram":
            raise TypeError(f"{name} is a {declared.kind}, not a histogram")
        names, values = declared.labels, tuple(labels)
        out = self.lines.setdefault(name, [])
        for le, count in buckets:
            out.append(self._line(f"{name}_bucket", (*names, "le"), (*values, le), count))
        if float(buckets[0][0]) >= 0:  # as HistogramMetricFamily: no _count/_sum with negative buckets
            out.append(self._line(f"{name}_count", names, values, buckets[-1][1]))
            out.append(self._line(f"{name}_sum", names, values, total))

    def series(self, name: str, labels: Sequence[str], rows: Sequence[tuple[str, ...]],
               values: Sequence[float]) -> None:
        sample = _SAMPLE.get(name)
        if sample is None:
            raise TypeError(f"{spec(name).name} is a histogram; use histogram()")
        shared = tuple(labels)
        key = (name, shared, tuple(rows))
        prefixes = self._series.get(key)
        if prefixes is None:
            names = spec(name).labels
            prefixes = self._series[key] = [f"{_prefix(sample, names, (*shared, *row))} " for row in rows]
        if len(prefixes) != len(values):
            raise ValueError(f"{name}: {len(prefixes)} label values, {len(values)} values")
        if values and set(map(type, values)) == {int} and max(values) < 1_000_000 and min(values) >= 0:
            text = "".join([f"{p}{v}.0\n" for p, v in zip(prefixes, values, strict=True)])  # counts: no call per value
        else:
            text = "".join([f"{p}{_value(v)}\n" for p, v in zip(prefixes, values, strict=True)])
        self.lines.setdefault(name, []).append(text)

    def chunks(self) -> dict[str, Chunk]:
        return {name: Chunk("".join(lines).encode()) for name, lines in self.lines.items()}


@dataclass
class _ModelText:
    """One monitor's settings text (rendered once) and evaluated text (once per evaluation)."""

    monitor: ModelMonitor
    settings: dict[str, Chunk]
    evaluation: Evaluation | None = None
    evaluated: dict[str, Chunk] = field(default_factory=dict)


class TextCache:
    """The collector's families as exposition text, rendered by layer.

    Settings are rendered once per monitor object, evaluated samples once per ``Evaluation``
    object (immutable, replaced whole: identity is the generation), live counters on every call.
    The samples equal :func:`render`'s at the same moment (tests/test_exposition_cache.py).
    """

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, tuple[str, ...]], str] = {}
        self._series: dict[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], list[str]] = {}
        self._models: dict[int, _ModelText] = {}
        self._headers = {(name, om): header(name, om).encode() for name in _ORDER for om in (False, True)}
        self._lock = threading.Lock()

    def _lines(self) -> _Lines:
        return _Lines(self._prefixes, self._series)

    def _model(self, monitor: ModelMonitor, snap: Snapshot) -> _ModelText:
        entry = self._models.get(id(monitor))
        if entry is None or entry.monitor is not monitor:
            settings = self._lines()
            for theme in SETTINGS:
                theme(snap, settings)
            entry = self._models[id(monitor)] = _ModelText(monitor, settings.chunks())
        if snap.evaluation is not entry.evaluation:
            evaluated = self._lines()
            for theme in EVALUATED:
                theme(snap, evaluated)
            entry.evaluation, entry.evaluated = snap.evaluation, evaluated.chunks()
        return entry

    def render(self, pairs: Sequence[tuple[ModelMonitor, Snapshot]], unattributed: dict[tuple[str, str], int],
               checkpoint: CheckpointStats | None = None, events: Mapping[str, Any] | None = None,
               openmetrics: bool = False) -> list[Part]:
        """Every family with samples, in contract order, as parts (no ``# EOF``: the caller appends
        the self-monitoring families)."""
        with self._lock:
            if len(self._prefixes) + len(self._series) > MAX_PREFIXES:
                self._prefixes.clear()
                self._series.clear()
            live = self._lines()
            _process(live, checkpoint)
            entries = []
            for monitor, snap in pairs:
                entries.append(self._model(monitor, snap))
                for theme in LIVE:
                    theme(snap, live)
            _process_tail(live, unattributed, events)
            current = {id(e.monitor) for e in entries}
            for gone in [k for k in self._models if k not in current]:
                del self._models[gone]
            out: list[Part] = []
            for name in _ORDER:
                parts = [part for e in entries for layer in (e.settings, e.evaluated)
                         if (part := layer.get(name)) is not None]
                lines = live.lines.get(name)
                if not parts and not lines:
                    continue
                out.append(self._headers[(name, openmetrics)])
                out.extend(parts)
                if lines:
                    out.append("".join(lines).encode())
            return out


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
        self._text = TextCache()

    def describe(self) -> list[Metric]:
        """Every family of the contract this collector renders (empty), so the registry refuses a
        clashing collector; the self-monitoring ones are exporter/selfmon.py's."""
        return [_family(m) for m in METRICS if m.theme != "self"]

    def collect(self) -> Iterator[Metric]:
        """The uncached path: every family rebuilt from fresh snapshots."""
        if self._on_scrape is not None:
            self._on_scrape()
        yield from render([m.snapshot() for m in self._monitors()], self._unattributed(), self._checkpoint(),
                          None if self._events is None else self._events())

    def text(self, openmetrics: bool = False) -> list[Part]:
        """The same samples as :meth:`collect`, as exposition text from the layered cache."""
        if self._on_scrape is not None:
            self._on_scrape()
        pairs = [(m, m.snapshot()) for m in self._monitors()]
        return self._text.render(pairs, self._unattributed(), self._checkpoint(),
                                 None if self._events is None else self._events(), openmetrics)
