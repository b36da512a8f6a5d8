"""YAML configuration → typed, validated config.

Every problem is reported with the key path that holds it (``models[1].drift.thresholds.psi:
must be a positive number``) and all problems are reported at once, so a user fixes a file in
one pass instead of one error per restart.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

import yaml

log = logging.getLogger("mlmon.config")

DRIFT_METHODS = ("psi", "js", "kl", "ks", "wasserstein", "chi2")
PVALUE_METHODS = frozenset({"chi2"})
"""Methods whose *fixed* threshold is a p-value (drift when p < threshold), not a score."""

AUTO = None
"""A threshold of ``auto``: the method's null quantile at the window's n (``exporter.calibration``)."""
DEFAULT_THRESHOLDS: dict[str, float | None] = dict.fromkeys(DRIFT_METHODS, AUTO)
DEFAULT_DETECTION = {"numeric": "ks", "categorical": "chi2"}
DEFAULT_FALSE_ALARM_RATE = 1e-5
"""Per feature and evaluation, over the full and the recent window together (README "Drift detection")."""
DEFAULT_RECENT_WINDOW_SECONDS = 300.0
DEFAULT_MIN_EFFECT: dict[str, float] = {
    "ks": 0.005,          # D: a 0.0125-sigma mean shift of a normal feature (0.01 sigma gives D = 0.004)
    "wasserstein": 0.0125,  # W in robust-sigma units: the same shift
    "chi2": 0.01,         # Cohen's w; a 0.05 share change always has w >= 0.1
    "psi": 0.0001,        # PSI ~ w^2
    "kl": 0.00005,        # KL ~ w^2 / 2
    "js": 0.004,          # JS distance ~ w / sqrt(8 ln 2)
}
"""Default relevance floors, in each method's own units (README "Drift detection"). Below the calibrated
threshold up to n = 50,000 against a baseline of 100,000 (so the false-alarm rate holds there), above
what a 0.01-sigma shift gives (so a million records of it are not an alarm)."""

DEFAULT_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1"})
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "mape"})
QUALITY_METRICS = HIGHER_IS_BETTER | LOWER_IS_BETTER
SLO_TYPES = ("latency", "availability", "correctness")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_RELATIVE = re.compile(r"^\s*baseline\s*([+-])\s*(\d+(?:\.\d+)?)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ConfigError(ValueError):
    """Raised with every problem found, one ``path: reason`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8000"
    max_body_bytes: int = 10 * 1024 * 1024
    auth_token_env: str | None = None
    ingest_workers: int = 0
    """Processes that parse and encode large prediction batches beside the serving thread
    (exporter/offload.py); 0, the default, keeps all work in the serving process, which costs half
    the CPU per batch (the hand-off to a process is dearer than the work since issue 12's fast path)."""
    threads: int = 8
    """Ignored: mlmon serves every listener from one thread (exporter/httpserver.py); still read, so
    older files load, with a warning."""
    metrics_listen: str | None = None
    """Own listener for /metrics, /healthz and /readyz; the main listener then serves ingest and /v1/models."""
    web_config_file: str | None = None
    """exporter-toolkit style web config: tls_server_config and basic_auth_users (guards GET routes)."""
    read_token_env: str | None = None
    """Environment variable with a bearer token for GET routes other than the probes."""
    connection_limit: int = 1000
    idle_timeout_seconds: float = 30.0
    request_timeout_seconds: float = 15.0
    """Deadline for receiving a whole request (headers and body): slow senders are cut off."""
    drain_timeout_seconds: float = 20.0
    """How long SIGTERM waits for in-flight requests before closing."""

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class LimitsConfig:
    """Caps on what clients control; each bounds series count or memory (README "Limits")."""

    max_versions: int = 20
    """Versions kept per model; a new one beyond the cap retires the least recently seen."""
    max_label_length: int = 128
    """Longest version, class or feature name that may become a label value or appear in /v1/models."""
    max_unknown_feature_names: int = 50
    """Unknown feature names remembered per model for /v1/models (all of their values are counted)."""
    max_classes: int = 100
    """Distinct predicted classes per version when the baseline does not fix them (rest: __other__)."""


@dataclass(frozen=True)
class WindowConfig:
    window_seconds: float = 3600.0
    bucket_seconds: float = 60.0
    evaluation_interval_seconds: float = 15.0
    min_samples: int = 200

    @property
    def n_buckets(self) -> int:
        return max(1, round(self.window_seconds / self.bucket_seconds))


@dataclass(frozen=True)
class FeatureDriftConfig:
    detection: str | None = None
    thresholds: dict[str, float | None] = field(default_factory=dict)
    min_effect: dict[str, float] = field(default_factory=dict)
    false_alarm_rate: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    methods: tuple[str, ...] = DRIFT_METHODS
    detection: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DETECTION))
    thresholds: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    min_effect: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE
    recent_window_seconds: float = DEFAULT_RECENT_WINDOW_SECONDS
    export_bins: bool = True
    """Per-bin series (``mlmon_feature_bin_total``, ``mlmon_baseline_bin_ratio``): the fleet rules need them."""
    features: dict[str, FeatureDriftConfig] = field(default_factory=dict)

    def detection_for(self, feature: str, kind: str) -> str:
        own = self.features.get(feature)
        return (own.detection if own and own.detection else None) or self.detection[kind]

    def threshold_for(self, feature: str, method: str) -> float | None:
        """The fixed threshold, or None for ``auto`` (calibrated to the window's n)."""
        own = self.features.get(feature)
        if own and method in own.thresholds:
            return own.thresholds[method]
        return self.thresholds.get(method, AUTO)

    def min_effect_for(self, feature: str, method: str) -> float:
        own = self.features.get(feature)
        if own and method in own.min_effect:
            return own.min_effect[method]
        return self.min_effect.get(method, DEFAULT_MIN_EFFECT[method])

    def false_alarm_rate_for(self, feature: str) -> float:
        own = self.features.get(feature)
        return own.false_alarm_rate if own and own.false_alarm_rate is not None else self.false_alarm_rate


@dataclass(frozen=True)
class SLOConfig:
    name: str
    type: str
    objective: float
    threshold_seconds: float | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class QualityThreshold:
    """An absolute value, or an offset from the baseline's reference value."""

    absolute: float | None = None
    baseline_offset: float | None = None

    def resolve(self, baseline_value: float | None) -> float | None:
        if self.absolute is not None:
            return self.absolute
        if baseline_value is None or not math.isfinite(baseline_value):
            return None
        return baseline_value + (self.baseline_offset or 0.0)


@dataclass(frozen=True)
class LabelsConfig:
    ttl_seconds: float = 7 * 86400.0
    max_pending: int = 1_000_000
    stale_after_seconds: float = 86400.0
    early_hold_seconds: float = 60.0
    """How long a label that came before its prediction waits for it before it counts as unmatched."""
    max_early: int = 10_000
    """Labels held at once; beyond it the oldest counts as unmatched."""


@dataclass(frozen=True)
class FairnessConfig:
    attributes: tuple[str, ...] = ()
    max_groups: int = 20
    min_samples: int = 100
    threshold: float = 0.1


@dataclass(frozen=True)
class DataQualityConfig:
    max_missing_ratio: float = 0.05
    max_unexpected_category_ratio: float = 0.05
    max_out_of_range_ratio: float = 0.05


@dataclass(frozen=True)
class ModelConfig:
    name: str
    baseline: str | None = None
    task: str = "classification"
    task_explicit: bool = False
    """True when the file sets ``task``: it must then agree with the baseline."""
    positive_class: str | None = None
    feature_names: tuple[str, ...] = ()
    drift: DriftConfig = field(default_factory=DriftConfig)
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    slos: tuple[SLOConfig, ...] = ()
    quality_thresholds: dict[str, QualityThreshold] = field(default_factory=dict)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    data_quality: DataQualityConfig = field(default_factory=DataQualityConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    stale_after_seconds: float = 900.0
    """Time without predictions after which the model's data counts as stale (traffic.stale_after)."""


UNANSWERED_MODES = ("error", "features_only")
ROUTE_MATCH_KEYS = ("inference_service", "namespace", "component", "endpoint")


@dataclass(frozen=True)
class EventRoute:
    """Which logged events belong to which mlmon model and version.

    An event matches when every ``match`` key given equals its attribute (KServe/Seldon
    ``inferenceservicename``, ``namespace``, ``component`` — Seldon's graph node ``modelid`` —
    and ``endpoint``, e.g. ``canary``).
    """

    match: tuple[tuple[str, str], ...]
    model: str
    version: str | None = None


@dataclass(frozen=True)
class EventsConfig:
    """``events:`` — how payload-logger CloudEvents become records (see exporter/events.py)."""

    ttl_seconds: float = 60.0
    max_pending: int = 100_000
    max_pending_bytes: int = 64 * 1024 * 1024
    components: tuple[str, ...] = ("predictor",)
    """KServe components whose events are used; others (transformer, explainer) are ignored and counted."""
    unanswered: str = "error"
    """``error``: a request left unanswered after the TTL is a failed inference (KServe and Seldon log
    a response only on success); ``features_only``: its features count, nothing else."""
    default_model: str | None = None
    default_version: str = "unknown"
    routes: tuple[EventRoute, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    """mlmon model → name of the response output that holds the prediction."""
    classes: dict[str, dict[str, str]] = field(default_factory=dict)
    """mlmon model → {class name in the response (``t:0``, ``0``) → class name used by labels}."""


@dataclass(frozen=True)
class StateConfig:
    """Where checkpoints go; without ``dir`` nothing is persisted and a restart starts clean."""

    dir: Path | None = None
    checkpoint_interval_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    state: StateConfig = field(default_factory=StateConfig)
    defaults: WindowConfig = field(default_factory=WindowConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    models: tuple[ModelConfig, ...] = ()
    source: Path | None = None
    events: EventsConfig = field(default_factory=EventsConfig)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def parse_duration(value: Any) -> float:
    """``"200ms"``, ``"15s"``, ``"1h"``, ``"7d"`` or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 15s, 1m, 1h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"must be a duration such as 15s, 1m, 1h or 7d, not {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


class _Reader:
    """Walks the YAML tree, collecting problems with their key paths instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    def mapping(self, node: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.fail(path, "must be a mapping")
            return {}
        for key in node:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else str(key),
                          f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return node

    def number(self, node: dict[str, Any], key: str, path: str, default: float, *,
               positive: bool = True, at_most: float | None = None, integer: bool = False) -> Any:
        if key not in node:
            return default
        value, where = node[key], f"{path}.{key}"
        kind = "a positive whole number" if integer else "a positive number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integer and not float(value).is_integer()):
            self.fail(where, f"must be {kind}")
            return default
        if not math.isfinite(value) or (positive and value <= 0) or value < 0:
            self.fail(where, f"must be {kind}")
            return default
        if at_most is not None and value > at_most:
            self.fail(where, f"must be at most {at_most:g}")
            return default
        return int(value) if integer else float(value)

    def duration(self, node: dict[str, Any], key: str, path: str, default: float) -> float:
        if key not in node:
            return default
        try:
            return parse_duration(node[key])
        except ValueError as exc:
            self.fail(f"{path}.{key}", str(exc))
            return default

    def ratio(self, node: dict[str, Any], key: str, path: str, default: float) -> float:
        value = self.number(node, key, path, default, at_most=1.0)
        if key in node and value == 1.0 and key == "objective":
            self.fail(f"{path}.{key}", "must be below 1 (an objective of 100% leaves no error budget)")
        return value

    @overload
    def string(self, node: dict[str, Any], key: str, path: str, default: str,
               choices: tuple[str, ...] | None = None) -> str: ...

    @overload
    def string(self, node: dict[str, Any], key: str, path: str, default: None = None,
               choices: tuple[str, ...] | None = None) -> str | None: ...

    def string(self, node: dict[str, Any], key: str, path: str, default: str | None = None,
               choices: tuple[str, ...] | None = None) -> str | None:
        if key not in node:
            return default
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value) == "":
            self.fail(f"{path}.{key}", "must be a non-empty string")
            return default
        value = str(value)
        if choices and value not in choices:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value

    def string_list(self, node: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = node.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{path}.{key}", "must be a list of non-empty strings")
            return ()
        if len(set(value)) != len(value):
            self.fail(f"{path}.{key}", "must not repeat a name")
        return tuple(value)


def _window(r: _Reader, node: Any, path: str, base: WindowConfig) -> WindowConfig:
    node = r.mapping(node, path, {"window", "bucket", "evaluation_interval", "min_samples"})
    cfg = WindowConfig(
        window_seconds=r.duration(node, "window", path, base.window_seconds),
        bucket_seconds=r.duration(node, "bucket", path, base.bucket_seconds),
        evaluation_interval_seconds=r.duration(node, "evaluation_interval", path,
                                               base.evaluation_interval_seconds),
        min_samples=r.number(node, "min_samples", path, base.min_samples, integer=True),
    )
    if cfg.bucket_seconds > cfg.window_seconds:
        r.fail(f"{path}.bucket", "must not be longer than the window")
    elif cfg.window_seconds / cfg.bucket_seconds > 10_000:
        r.fail(f"{path}.bucket", "gives more than 10000 buckets per window; use a longer bucket")
    return cfg


def _address(r: _Reader, node: dict[str, Any], key: str, path: str, default: str | None) -> str | None:
    value = r.string(node, key, path, default)
    if value is None or key not in node:
        return value
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$", value):
        r.fail(f"{path}.{key}", f"must be HOST:PORT such as 127.0.0.1:8000, not {value!r}")
        return default
    if not 0 <= int(value.rsplit(":", 1)[1]) < 65536:
        r.fail(f"{path}.{key}", "port must be between 0 and 65535")
        return default
    return value


def _limits(r: _Reader, node: Any, path: str) -> LimitsConfig:
    node = r.mapping(node, path, {"max_versions", "max_label_length", "max_unknown_feature_names", "max_classes"})
    d = LimitsConfig()
    return LimitsConfig(
        max_versions=r.number(node, "max_versions", path, d.max_versions, integer=True, at_most=1000),
        max_label_length=r.number(node, "max_label_length", path, d.max_label_length, integer=True, at_most=1024),
        max_unknown_feature_names=r.number(node, "max_unknown_feature_names", path, d.max_unknown_feature_names,
                                           integer=True, at_most=10_000),
        max_classes=r.number(node, "max_classes", path, d.max_classes, integer=True, at_most=10_000),
    )


def _thresholds(r: _Reader, node: Any, path: str) -> dict[str, float | None]:
    node = r.mapping(node, path, set(DRIFT_METHODS))
    out: dict[str, float | None] = {}
    for method in node:
        if method in DRIFT_METHODS:
            if node[method] == "auto":
                out[method] = AUTO
                continue
            at_most = 1.0 if method in PVALUE_METHODS else None
            value = r.number(node, method, path, 0.0, at_most=at_most)
            out[method] = value if value > 0 else AUTO
    return out


def _min_effect(r: _Reader, node: Any, path: str) -> dict[str, float]:
    node = r.mapping(node, path, set(DRIFT_METHODS))
    return {m: r.number(node, m, path, DEFAULT_MIN_EFFECT[m], positive=False) for m in node if m in DRIFT_METHODS}


def _false_alarm_rate(r: _Reader, node: dict[str, Any], path: str, default: float | None) -> float | None:
    value = r.number(node, "false_alarm_rate", path, default or 0.0, at_most=0.5)
    return value if "false_alarm_rate" in node else default


def _recent_window(r: _Reader, node: dict[str, Any], path: str) -> float:
    """Length of the recent window tested beside the full one; ``off`` (or 0) disables it."""
    if node.get("recent_window") in (0, "0", "off", False):
        return 0.0
    return r.duration(node, "recent_window", path, DEFAULT_RECENT_WINDOW_SECONDS)


def _drift(r: _Reader, node: Any, path: str) -> DriftConfig:
    node = r.mapping(node, path, {"methods", "detection", "thresholds", "min_effect", "false_alarm_rate",
                                  "recent_window", "export_bins", "features"})
    export_bins = node.get("export_bins", True)
    if not isinstance(export_bins, bool):
        r.fail(f"{path}.export_bins", "must be true or false")
        export_bins = True
    methods: tuple[str, ...] = DRIFT_METHODS
    if "methods" in node:
        listed = r.string_list(node, "methods", path)
        for i, m in enumerate(listed):
            if m not in DRIFT_METHODS:
                r.fail(f"{path}.methods[{i}]", f"unknown method {m!r} (expected one of: {', '.join(DRIFT_METHODS)})")
        methods = tuple(m for m in listed if m in DRIFT_METHODS) or DRIFT_METHODS
    detection = dict(DEFAULT_DETECTION)
    det = r.mapping(node.get("detection"), f"{path}.detection", {"numeric", "categorical"})
    for kind in det:
        if kind in detection:
            chosen = r.string(det, kind, f"{path}.detection", detection[kind], DRIFT_METHODS)
            if chosen and chosen not in methods:
                r.fail(f"{path}.detection.{kind}", f"method {chosen!r} is not in drift.methods")
            detection[kind] = chosen or detection[kind]
    thresholds = {**DEFAULT_THRESHOLDS, **_thresholds(r, node.get("thresholds"), f"{path}.thresholds")}
    features = {}
    feats = r.mapping(node.get("features"), f"{path}.features", set(node.get("features") or {}))
    for name, spec in feats.items():
        fpath = f"{path}.features.{name}"
        spec = r.mapping(spec, fpath, {"detection", "thresholds", "min_effect", "false_alarm_rate"})
        features[str(name)] = FeatureDriftConfig(
            detection=r.string(spec, "detection", fpath, None, DRIFT_METHODS),
            thresholds=_thresholds(r, spec.get("thresholds"), f"{fpath}.thresholds"),
            min_effect=_min_effect(r, spec.get("min_effect"), f"{fpath}.min_effect"),
            false_alarm_rate=_false_alarm_rate(r, spec, fpath, None),
        )
    return DriftConfig(
        methods=methods, detection=detection, thresholds=thresholds,
        min_effect={**DEFAULT_MIN_EFFECT, **_min_effect(r, node.get("min_effect"), f"{path}.min_effect")},
        false_alarm_rate=_false_alarm_rate(r, node, path, DEFAULT_FALSE_ALARM_RATE) or DEFAULT_FALSE_ALARM_RATE,
        recent_window_seconds=_recent_window(r, node, path), export_bins=export_bins,
        features=features)


def _slos(r: _Reader, node: Any, path: str, task: str) -> tuple[SLOConfig, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        r.fail(path, "must be a list")
        return ()
    out, seen = [], set()
    for i, item in enumerate(node):
        ipath = f"{path}[{i}]"
        item = r.mapping(item, ipath, {"name", "type", "objective", "threshold", "tolerance"})
        kind = r.string(item, "type", ipath, None, SLO_TYPES)
        if "type" not in item:
            r.fail(f"{ipath}.type", f"is required (one of {', '.join(SLO_TYPES)})")
        name = r.string(item, "name", ipath, kind)
        if name in seen:
            r.fail(f"{ipath}.name", f"duplicate SLO name {name!r}")
        seen.add(name)
        if "objective" not in item:
            r.fail(f"{ipath}.objective", "is required (a ratio such as 0.99)")
        objective = r.ratio(item, "objective", ipath, 0.99)
        threshold = tolerance = None
        if kind == "latency":
            if "threshold" not in item:
                r.fail(f"{ipath}.threshold", "is required for a latency SLO (such as 200ms)")
            threshold = r.duration(item, "threshold", ipath, 0.2)
        if kind == "correctness" and task == "regression":
            if "tolerance" not in item:
                r.fail(f"{ipath}.tolerance", "is required for a regression correctness SLO")
            tolerance = r.number(item, "tolerance", ipath, 0.0)
        if kind and name:
            out.append(SLOConfig(name, kind, objective, threshold, tolerance))
    return tuple(out)


def _quality(r: _Reader, node: Any, path: str) -> dict[str, QualityThreshold]:
    node = r.mapping(node, path, {"thresholds"})
    tpath = f"{path}.thresholds"
    raw = r.mapping(node.get("thresholds"), tpath, set(QUALITY_METRICS))
    out = {}
    for metric, value in raw.items():
        if metric not in QUALITY_METRICS:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[metric] = QualityThreshold(absolute=float(value))
            continue
        match = _RELATIVE.match(str(value)) if isinstance(value, str) else None
        if not match:
            r.fail(f"{tpath}.{metric}", "must be a number or 'baseline - X' / 'baseline + X'")
            continue
        offset = float(match.group(2)) * (-1 if match.group(1) == "-" else 1)
        out[metric] = QualityThreshold(baseline_offset=offset)
    return out


def _model(r: _Reader, node: Any, path: str, defaults: WindowConfig, base_dir: Path | None) -> ModelConfig | None:
    node = r.mapping(node, path, {
        "name", "baseline", "task", "positive_class", "feature_names", "drift", "latency_buckets",
        "slos", "quality", "labels", "fairness", "data_quality", "window", "traffic"})
    name = r.string(node, "name", path)
    if name is None:
        if "name" not in node:
            r.fail(f"{path}.name", "is required")
        return None
    if not _NAME.match(name):
        r.fail(f"{path}.name", "may hold only letters, digits and _ . : - (at most 128)")
    task = r.string(node, "task", path, "classification", ("classification", "regression"))
    baseline = r.string(node, "baseline", path)
    if baseline and base_dir is not None and not Path(baseline).is_absolute():
        baseline = str(base_dir / baseline)
    buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    if "latency_buckets" in node:
        raw = node["latency_buckets"]
        ok = isinstance(raw, list) and raw and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in raw)
        if not ok or list(raw) != sorted(set(raw)):
            r.fail(f"{path}.latency_buckets", "must be a non-empty, strictly increasing list of positive seconds")
        else:
            buckets = tuple(float(v) for v in raw)
    lpath = f"{path}.labels"
    labels = r.mapping(node.get("labels"), lpath, {"ttl", "max_pending", "stale_after", "early_hold", "max_early"})
    fpath = f"{path}.fairness"
    fair = r.mapping(node.get("fairness"), fpath, {"attributes", "max_groups", "min_samples", "threshold"})
    tpath = f"{path}.traffic"
    traffic = r.mapping(node.get("traffic"), tpath, {"stale_after"})
    qpath = f"{path}.data_quality"
    dq = r.mapping(node.get("data_quality"), qpath,
                   {"max_missing_ratio", "max_unexpected_category_ratio", "max_out_of_range_ratio"})
    return ModelConfig(
        name=name,
        baseline=baseline,
        task=task,
        task_explicit="task" in node,
        positive_class=r.string(node, "positive_class", path),
        feature_names=r.string_list(node, "feature_names", path),
        drift=_drift(r, node.get("drift"), f"{path}.drift"),
        latency_buckets=buckets,
        slos=_slos(r, node.get("slos"), f"{path}.slos", task),
        quality_thresholds=_quality(r, node.get("quality"), f"{path}.quality"),
        labels=LabelsConfig(
            ttl_seconds=r.duration(labels, "ttl", lpath, LabelsConfig.ttl_seconds),
            max_pending=r.number(labels, "max_pending", lpath, LabelsConfig.max_pending, integer=True),
            stale_after_seconds=r.duration(labels, "stale_after", lpath, LabelsConfig.stale_after_seconds),
            early_hold_seconds=r.duration(labels, "early_hold", lpath, LabelsConfig.early_hold_seconds),
            max_early=r.number(labels, "max_early", lpath, LabelsConfig.max_early, integer=True, at_most=1_000_000),
        ),
        fairness=FairnessConfig(
            attributes=r.string_list(fair, "attributes", fpath),
            max_groups=r.number(fair, "max_groups", fpath, FairnessConfig.max_groups, integer=True),
            min_samples=r.number(fair, "min_samples", fpath, FairnessConfig.min_samples, integer=True),
            threshold=r.number(fair, "threshold", fpath, FairnessConfig.threshold, at_most=1.0),
        ),
        data_quality=DataQualityConfig(
            max_missing_ratio=r.ratio(dq, "max_missing_ratio", qpath, 0.05),
            max_unexpected_category_ratio=r.ratio(dq, "max_unexpected_category_ratio", qpath, 0.05),
            max_out_of_range_ratio=r.ratio(dq, "max_out_of_range_ratio", qpath, 0.05),
        ),
        window=_window(r, node.get("window"), f"{path}.window", defaults),
        stale_after_seconds=r.duration(traffic, "stale_after", tpath, ModelConfig.stale_after_seconds),
    )


def _event_routes(r: _Reader, node: Any, path: str, models: set[str]) -> tuple[EventRoute, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        r.fail(path, "must be a list of {match: {...}, model, version}")
        return ()
    routes = []
    for i, item in enumerate(node):
        where = f"{path}[{i}]"
        item = r.mapping(item, where, {"match", "model", "version"})
        match = r.mapping(item.get("match"), f"{where}.match", set(ROUTE_MATCH_KEYS))
        pairs = []
        for key in ROUTE_MATCH_KEYS:
            value = r.string(match, key, f"{where}.match")
            if value is not None:
                pairs.append((key, value))
        if not pairs:
            r.fail(f"{where}.match", f"must name at least one of {', '.join(ROUTE_MATCH_KEYS)}")
        model = r.string(item, "model", where)
        if model is None:
            r.fail(f"{where}.model", "is required")
            continue
        if model not in models:
            r.fail(f"{where}.model", f"unknown model {model!r} (configured: {', '.join(sorted(models))})")
        routes.append(EventRoute(tuple(pairs), model, r.string(item, "version", where)))
    return tuple(routes)


def class_mapping(value: Any) -> dict[str, str]:
    """A list of class names (for index ``i`` and Seldon's ``t:i``) or a mapping → ``{from: to}``."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int)) for v in value):
        out: dict[str, str] = {}
        for i, name in enumerate(value):
            out[f"t:{i}"] = out[str(i)] = str(name)
        return out
    if isinstance(value, dict) and value and all(
            isinstance(k, (str, int)) and isinstance(v, (str, int)) for k, v in value.items()):
        return {str(k): str(v) for k, v in value.items()}
    raise ValueError("must be a list of class names or a mapping of class name to class name")


def _event_classes(r: _Reader, node: Any, path: str, models: set[str]) -> dict[str, dict[str, str]]:
    """``{model: {from: to}}``, or ``{model: [name0, name1, ...]}`` for ``t:i`` / ``i`` classes."""
    out: dict[str, dict[str, str]] = {}
    for model, mapping in r.mapping(node, path, models).items():
        where = f"{path}.{model}"
        try:
            out[model] = class_mapping(mapping)
        except ValueError:
            r.fail(where, "must be a list of class names (index i, or t:i) or a mapping of class name to class name")
    return out


def _events(r: _Reader, node: Any, models: set[str]) -> EventsConfig:
    path = "events"
    ev = r.mapping(node, path, {"ttl", "max_pending", "max_pending_bytes", "components", "unanswered",
                                "default_model", "default_version", "routes", "outputs", "classes"})
    default_model = r.string(ev, "default_model", path)
    if default_model is not None and default_model not in models:
        r.fail(f"{path}.default_model", f"unknown model {default_model!r} (configured: {', '.join(sorted(models))})")
    outputs = {}
    for model, name in r.mapping(ev.get("outputs"), f"{path}.outputs", models).items():
        value = r.string({model: name}, model, f"{path}.outputs")
        if value is not None:
            outputs[model] = value
    components = r.string_list(ev, "components", path) if "components" in ev else EventsConfig.components
    return EventsConfig(
        ttl_seconds=r.duration(ev, "ttl", path, EventsConfig.ttl_seconds),
        max_pending=r.number(ev, "max_pending", path, EventsConfig.max_pending, integer=True),
        max_pending_bytes=r.number(ev, "max_pending_bytes", path, EventsConfig.max_pending_bytes, integer=True),
        components=components,
        unanswered=r.string(ev, "unanswered", path, EventsConfig.unanswered, UNANSWERED_MODES) or "error",
        default_model=default_model,
        default_version=r.string(ev, "default_version", path, EventsConfig.default_version) or "unknown",
        routes=_event_routes(r, ev.get("routes"), f"{path}.routes", models),
        outputs=outputs,
        classes=_event_classes(r, ev.get("classes"), f"{path}.classes", models),
    )


def config_from_dict(data: Any, *, base_dir: Path | None = None, source: Path | None = None) -> Config:
    """Validate a parsed YAML document; raise ``ConfigError`` listing every problem."""
    r = _Reader()
    top = r.mapping(data, "", {"server", "state", "defaults", "limits", "models", "events"})
    spath = "server"
    srv = r.mapping(top.get("server"), spath, {
        "listen", "max_body_bytes", "auth_token_env", "threads", "metrics_listen", "web_config_file",
        "read_token_env", "connection_limit", "idle_timeout", "request_timeout", "drain_timeout",
        "ingest_workers"})
    listen = _address(r, srv, "listen", spath, ServerConfig.listen)
    metrics_listen = _address(r, srv, "metrics_listen", spath, None)
    if listen and metrics_listen and listen == metrics_listen:
        r.fail(f"{spath}.metrics_listen", "must differ from server.listen")
    web_config = r.string(srv, "web_config_file", spath)
    if web_config and base_dir is not None and not Path(web_config).is_absolute():
        web_config = str(base_dir / web_config)
    server = ServerConfig(
        metrics_listen=metrics_listen,
        web_config_file=web_config,
        read_token_env=r.string(srv, "read_token_env", spath),
        connection_limit=r.number(srv, "connection_limit", spath, ServerConfig.connection_limit, integer=True,
                                  at_most=50_000),
        idle_timeout_seconds=r.duration(srv, "idle_timeout", spath, ServerConfig.idle_timeout_seconds),
        request_timeout_seconds=r.duration(srv, "request_timeout", spath, ServerConfig.request_timeout_seconds),
        drain_timeout_seconds=r.duration(srv, "drain_timeout", spath, ServerConfig.drain_timeout_seconds),
        listen=listen or ServerConfig.listen,
        max_body_bytes=r.number(srv, "max_body_bytes", spath, ServerConfig.max_body_bytes, integer=True),
        auth_token_env=r.string(srv, "auth_token_env", spath),
        threads=r.number(srv, "threads", spath, ServerConfig.threads, integer=True, at_most=256),
        ingest_workers=r.number(srv, "ingest_workers", spath, ServerConfig.ingest_workers, integer=True, at_most=64,
                                positive=False),
    )
    if "threads" in srv:
        log.warning("server.threads is ignored: mlmon serves every listener from one thread (README Architecture)")
    st = r.mapping(top.get("state"), "state", {"dir", "checkpoint_interval"})
    state_dir = r.string(st, "dir", "state")
    state = StateConfig(
        dir=None if not state_dir else (base_dir or Path(".")) / state_dir,
        checkpoint_interval_seconds=r.duration(st, "checkpoint_interval", "state",
                                               StateConfig.checkpoint_interval_seconds))
    if state.checkpoint_interval_seconds <= 0:
        r.fail("state.checkpoint_interval", "must be > 0")
    defaults = _window(r, top.get("defaults"), "defaults", WindowConfig())
    limits = _limits(r, top.get("limits"), "limits")
    models: list[ModelConfig] = []
    raw_models = top.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        r.fail("models", "must be a non-empty list of models")
        raw_models = []
    for i, node in enumerate(raw_models):
        model = _model(r, node, f"models[{i}]", defaults, base_dir)
        if model is None:
            continue
        if any(m.name == model.name for m in models):
            r.fail(f"models[{i}].name", f"duplicate model name {model.name!r}")
        models.append(replace(model, limits=limits))
    events = _events(r, top.get("events"), {m.name for m in models})
    if r.problems:
        raise ConfigError(r.problems)
    return Config(server=server, state=state, defaults=defaults, limits=limits, models=tuple(models), source=source,
                  events=events)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file; baseline paths are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError([f"{path}: invalid YAML at {where}: {getattr(exc, 'problem', exc)}"]) from exc
    return config_from_dict(data, base_dir=path.parent, source=path)
