"""The mixin config (``mixin/config.yml``): typed, validated, every error names the key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parent / "config.yml"
ACTIONS = ("page", "ticket")
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    """``"5m"`` → 300 (units s, m, h, d)."""
    m = _DURATION.match(duration)
    if not m:
        raise ValueError(f"{duration!r} is not a duration like 5m, 6h or 30d")
    return int(m[1]) * _UNIT_S[m[2]]


@dataclass(frozen=True)
class BurnRate:
    long: str
    short: str
    factor: float
    action: str


@dataclass(frozen=True)
class MixinConfig:
    job: str = "mlmon"
    group_labels: tuple[str, ...] = ()
    grafana_url: str = "http://grafana.example.com"
    runbook_url: str = "https://github.com/mlmon/mlmon/blob/main/docs/runbooks.md"
    severities: dict[str, str] = field(default_factory=lambda: {"page": "critical", "ticket": "warning"})
    slo_period: str = "30d"
    burn_rates: tuple[BurnRate, ...] = ()
    slo_for: dict[str, str] = field(default_factory=lambda: {"page": "2m", "ticket": "15m"})
    serving_min_share: float = 0.01
    deploy_lookback: str = "10m"

    @property
    def job_selector(self) -> str:
        return f'job="{self.job}"'

    def windows(self) -> list[str]:
        """Every SLO window the rules record, shortest first: the policy's windows and the period."""
        ws = {w for b in self.burn_rates for w in (b.long, b.short)} | {"5m", self.slo_period}
        return sorted(ws, key=seconds)


def _require(doc: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in doc:
        raise ValueError(f"{where}{key}: is required")
    value = doc[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}{key}: must be a {kind.__name__}, got {value!r}")
    return value


def parse(doc: Any) -> MixinConfig:
    if not isinstance(doc, dict):
        raise ValueError("mixin config: must be a mapping")
    unknown = set(doc) - {"job", "group_labels", "grafana_url", "runbook_url", "severities", "slo",
                          "serving_min_share", "deploy_lookback"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key")
    job = _require(doc, "job", str)
    if not job or '"' in job or "\\" in job:
        raise ValueError(f"job: {job!r} is not a usable job label value")
    labels = doc.get("group_labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) and _LABEL.match(x) for x in labels):
        raise ValueError(f"group_labels: must be a list of label names, got {labels!r}")
    if {"job", "instance", "model"} & set(labels):
        raise ValueError("group_labels: job, instance and model are always grouped on; list only the others")
    severities = _require(doc, "severities", dict)
    for action in ACTIONS:
        if not isinstance(severities.get(action), str) or not severities[action]:
            raise ValueError(f"severities.{action}: must be a non-empty string")
    slo = _require(doc, "slo", dict)
    period = _require(slo, "period", str, "slo.")
    seconds(period)
    burn = []
    for i, entry in enumerate(_require(slo, "burn_rates", list, "slo.")):
        where = f"slo.burn_rates[{i}]."
        if not isinstance(entry, dict):
            raise ValueError(f"slo.burn_rates[{i}]: must be a mapping")
        long, short = _require(entry, "long", str, where), _require(entry, "short", str, where)
        if seconds(short) >= seconds(long):
            raise ValueError(f"{where}short: {short} must be shorter than long ({long})")
        if seconds(long) > seconds(period):
            raise ValueError(f"{where}long: {long} is longer than the SLO period {period}")
        factor = _require(entry, "factor", float, where)
        if factor <= 0:
            raise ValueError(f"{where}factor: must be > 0, got {factor}")
        action = _require(entry, "action", str, where)
        if action not in ACTIONS:
            raise ValueError(f"{where}action: must be one of {', '.join(ACTIONS)}, got {action!r}")
        burn.append(BurnRate(long, short, factor, action))
    slo_for = _require(slo, "for", dict, "slo.")
    for action in {b.action for b in burn}:
        seconds(_require(slo_for, action, str, "slo.for."))
    share = _require(doc, "serving_min_share", float)
    if not 0 < share < 1:
        raise ValueError(f"serving_min_share: must be in (0, 1), got {share}")
    lookback = _require(doc, "deploy_lookback", str)
    seconds(lookback)
    return MixinConfig(deploy_lookback=lookback, job=job, group_labels=tuple(labels),
                       grafana_url=_require(doc, "grafana_url", str).rstrip("/"),
                       runbook_url=_require(doc, "runbook_url", str), severities=dict(severities),
                       slo_period=period, burn_rates=tuple(burn), slo_for=dict(slo_for), serving_min_share=share)


def load(path: Path = DEFAULT_PATH) -> MixinConfig:
    return parse(yaml.safe_load(path.read_text(encoding="utf-8")))
