"""mlmon's Grafana dashboards as reviewable, deterministic JSON, built from the mixin config.

Generated with the rules by ``python -m mixin`` (``--check`` in CI). Four dashboards, linked to each
other, all reading the metric contract of DESIGN.md; the README maps them onto the three views:

* ``mlmon-overview`` — executive: one row per model (repeated over ``$model``).
* ``mlmon-service``  — on-call: latency vs SLO, traffic, versions serving, errors, burn rates,
  alerts, freshness, and the sidecars' own resource use (self-monitoring).
* ``mlmon-drift``    — debug: drift per feature, distributions now vs baseline, data quality.
* ``mlmon-quality``  — model quality per replica vs baseline and threshold, confusion matrix,
  labels, fairness.

Panels are written with ``model`` / ``version`` / ``feature`` matchers only; ``scope_dashboard``
then adds the deployment selectors (``job``, ``instance`` and the config's grouping labels, each a
template variable) to every raw and recorded series, so a job rename is one config change.
Conventions (enforced by ``tests/test_dashboards.py``): a ``datasource`` variable, counters only
inside ``rate()`` / ``increase()`` over ``$__rate_interval`` (``$__range`` for whole-range totals,
fixed SLO windows for burn rates), a unit and a description on every panel, ids and grid
positions assigned here in order, keys sorted. Only the standard library is used.
"""

from __future__ import annotations

import json
from typing import Any

from mixin.config import MixinConfig
from mixin.promql import scope

SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
RANGE = "$__range"
TAGS = ["mlmon"]
ALERTS = 'ALERTS{alertname=~"Mlmon.*", alertstate="firing"'

# Label matchers shared by the queries below.
M = 'model=~"$model"'
# Alerts about mlmon itself (e.g. a sidecar down) carry no model label: show them with every model.
ALERT_M = 'model=~"$model|"'
MV = 'model=~"$model", version=~"$version"'

# Units: Grafana ids, or custom "suffix:" units (value + suffix, no SI scaling).
PRED_S = "suffix: pred/s"
REC_S = "suffix: rec/s"
LABELS_S = "suffix: labels/s"
TIMES = "suffix:x"  # burn rate: multiples of the budget-neutral rate

# Colours (Grafana palette names).
GREEN, YELLOW, ORANGE, RED, BLUE, GREY = "green", "yellow", "orange", "red", "blue", "text"

DASHBOARDS = {
    "overview": ("mlmon-overview", "mlmon / Overview"),
    "service": ("mlmon-service", "mlmon / Service"),
    "drift": ("mlmon-drift", "mlmon / Drift"),
    "quality": ("mlmon-quality", "mlmon / Quality"),
}

# The config being built. The panel functions read it (burn-rate policy, SLO period, serving share);
# build_dashboards() sets it before calling them.
CFG = MixinConfig()


# --------------------------------------------------------------------------------------------
# PromQL helpers
# --------------------------------------------------------------------------------------------

def rate(metric: str, matchers: str, window: str = RI) -> str:
    return f"rate({metric}{{{matchers}}}[{window}])"


def increase(metric: str, matchers: str, window: str = RI) -> str:
    return f"increase({metric}{{{matchers}}}[{window}])"


def quantile(q: float, metric: str, matchers: str, by: str) -> str:
    """histogram_quantile over a classic histogram's ``_bucket`` series."""
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(metric + '_bucket', matchers)}))"


def burn_rate(window: str, by: str = "model, slo", matchers: str = M) -> str:
    """Error ratio over ``window`` / error budget, from the recording rule the alerts use (the same
    number the alert compares, computed once per evaluation, not per dashboard refresh)."""
    return f"max by ({by}) (model_slo:mlmon_slo_burn_rate:ratio_rate{window}{{{matchers}}})"


def budget_remaining(by: str = "model, slo", matchers: str = M) -> str:
    """Share of the period's error budget left (negative when overspent), from its recording rule:
    a raw increase(...[30d]) would re-read a month of every replica's counters on each refresh."""
    return f"max by ({by}) (model_slo:mlmon_slo_error_budget_remaining:ratio_rate{CFG.slo_period}{{{matchers}}})"


def zero_if_absent(expr: str, like: str) -> str:
    """``expr``, or 0 for every series of ``like`` (counters are often created on first use)."""
    return f"({expr} or {like} * 0)"


# --------------------------------------------------------------------------------------------
# Panel helpers
# --------------------------------------------------------------------------------------------

def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series",
           hide: bool = False) -> dict[str, Any]:
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "format": fmt, "instant": instant,
         "legendFormat": legend or "__auto", "range": not instant}
    if hide:
        t["hide"] = True
    return t


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    """``thresholds((None, "green"), (0.8, "yellow"), (1, "red"))`` — the first step is the base."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def dashed(name_regex: str, color: str) -> dict[str, Any]:
    """Override: draw matching series as a dashed reference line (SLO, baseline, threshold)."""
    return {"matcher": {"id": "byRegexp", "options": name_regex}, "properties": [
        {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
        {"id": "custom.fillOpacity", "value": 0},
        {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}},
    ]}


def link(title: str, uid: str, params: str = "") -> dict[str, Any]:
    """A panel link to another mlmon dashboard, keeping the time range and data source."""
    query = "&".join(["var-datasource=${datasource}", *selector_params(), "${__url_time_range}",
                      *([params] if params else [])])
    return {"targetBlank": False, "title": title, "url": f"/d/{uid}/{uid}?{query}"}


def panel(kind: str, title: str, description: str, targets: list[dict[str, Any]], unit: str, *,
          options: dict[str, Any] | None = None, custom: dict[str, Any] | None = None,
          overrides: list[dict[str, Any]] | None = None, steps: dict[str, Any] | None = None,
          color: dict[str, Any] | None = None, mappings: list[dict[str, Any]] | None = None,
          transformations: list[dict[str, Any]] | None = None, links: list[dict[str, Any]] | None = None,
          min: float | None = None, max: float | None = None, decimals: int | None = None,
          **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": color or {"mode": "palette-classic"},
        "custom": custom or {},
        "mappings": mappings or [],
        "thresholds": steps or thresholds((None, GREEN)),
        "unit": unit,
    }
    for key, value in (("min", min), ("max", max), ("decimals", decimals)):
        if value is not None:
            defaults[key] = value
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p = {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "links": links or [],
        "options": options or {},
        "targets": targets,
        "title": title,
        "transformations": transformations or [],
        "type": kind,
    }
    p.update(extra)
    return p


def legend(placement: str = "bottom", calcs: list[str] | None = None, mode: str = "list") -> dict[str, Any]:
    return {"calcs": calcs or [], "displayMode": mode, "placement": placement, "showLegend": True}


def timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str, *,
               fill: int = 10, line_thresholds: bool = False, stack: bool = False,
               calcs: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    custom = {
        "axisBorderShow": False, "axisCenteredZero": False, "axisColorMode": "text", "axisLabel": "",
        "axisPlacement": "auto", "barAlignment": 0, "drawStyle": "line", "fillOpacity": fill,
        "gradientMode": "none", "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False, "lineInterpolation": "linear", "lineWidth": 1, "pointSize": 4,
        "scaleDistribution": {"type": "linear"}, "showPoints": "never", "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if line_thresholds else "off"},
    }
    options = {"legend": legend("bottom", calcs, "table" if calcs else "list"),
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, targets, unit, options=options, custom=custom, **kw)


def stat(title: str, description: str, targets: list[dict[str, Any]], unit: str, *,
         color_mode: str = "background", graph: bool = False, text_mode: str = "auto",
         calc: str = "lastNotNull", **kw: Any) -> dict[str, Any]:
    options = {
        "colorMode": color_mode, "graphMode": "area" if graph else "none", "justifyMode": "auto",
        "orientation": "auto", "reduceOptions": {"calcs": [calc], "fields": "", "values": False},
        "showPercentChange": False, "textMode": text_mode, "wideLayout": True,
    }
    kw.setdefault("color", {"mode": "thresholds"})
    return panel("stat", title, description, targets, unit, options=options, **kw)


def bargauge(title: str, description: str, targets: list[dict[str, Any]], unit: str, **kw: Any) -> dict[str, Any]:
    options = {
        "displayMode": "gradient", "maxVizHeight": 300, "minVizHeight": 16, "minVizWidth": 8,
        "namePlacement": "auto", "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True, "sizing": "auto", "valueMode": "color",
    }
    kw.setdefault("color", {"mode": "thresholds"})
    return panel("bargauge", title, description, targets, unit, options=options, **kw)


def table(title: str, description: str, targets: list[dict[str, Any]], unit: str, *,
          sort_by: str | None = None, cell: str = "auto", **kw: Any) -> dict[str, Any]:
    options = {"cellHeight": "sm", "showHeader": True,
               "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
               "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else []}
    custom = {"align": "auto", "cellOptions": {"type": cell}, "filterable": False, "inspect": False}
    return panel("table", title, description, targets, unit, options=options, custom=custom, **kw)


def barchart(title: str, description: str, targets: list[dict[str, Any]], unit: str, *, x_field: str,
             **kw: Any) -> dict[str, Any]:
    options = {
        "barRadius": 0, "barWidth": 0.9, "fullHighlight": False, "groupWidth": 0.75,
        "legend": legend(), "orientation": "vertical", "showValue": "never", "stacking": "none",
        "tooltip": {"mode": "multi", "sort": "none"}, "xField": x_field,
        "xTickLabelRotation": 0, "xTickLabelSpacing": 0,
    }
    custom = {"axisBorderShow": False, "axisCenteredZero": False, "axisColorMode": "text",
              "axisLabel": "", "axisPlacement": "auto", "fillOpacity": 80, "gradientMode": "none",
              "hideFrom": {"legend": False, "tooltip": False, "viz": False}, "lineWidth": 1,
              "scaleDistribution": {"type": "linear"}, "thresholdsStyle": {"mode": "off"}}
    return panel("barchart", title, description, targets, unit, options=options, custom=custom, **kw)


def state_timeline(title: str, description: str, targets: list[dict[str, Any]], unit: str,
                   **kw: Any) -> dict[str, Any]:
    options = {"alignValue": "left", "legend": legend(), "mergeValues": False, "rowHeight": 0.85,
               "showValue": "never", "tooltip": {"mode": "single", "sort": "none"}}
    custom = {"fillOpacity": 80, "hideFrom": {"legend": False, "tooltip": False, "viz": False},
              "lineWidth": 0}
    kw.setdefault("color", {"mode": "thresholds"})
    return panel("state-timeline", title, description, targets, unit, options=options, custom=custom, **kw)


def merge_table(renames: dict[str, str], drop: tuple[str, ...] = ("Time",)) -> list[dict[str, Any]]:
    """Join instant table queries on their labels, drop ``Time`` and name the value columns."""
    return [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": dict.fromkeys(drop, True),
                                       "indexByName": {}, "renameByName": renames}},
    ]


def color_cells(column: str, steps: dict[str, Any], unit: str | None = None) -> dict[str, Any]:
    props = [{"id": "custom.cellOptions", "value": {"mode": "basic", "type": "color-background"}},
             {"id": "thresholds", "value": steps}, {"id": "color", "value": {"mode": "thresholds"}}]
    if unit:
        props.append({"id": "unit", "value": unit})
    return {"matcher": {"id": "byName", "options": column}, "properties": props}


# --------------------------------------------------------------------------------------------
# Variables, annotations, links
# --------------------------------------------------------------------------------------------

def datasource_var() -> dict[str, Any]:
    return {"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
            "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
            "skipUrlSync": False, "type": "datasource"}


def query_var(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True,
              default: str | None = None, regex: str = "") -> dict[str, Any]:
    if default is not None:
        current = {"selected": True, "text": default, "value": default}
    elif include_all:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        current = {}
    return {
        "current": current, "datasource": DS, "definition": query, "hide": 0,
        "includeAll": include_all, "label": label, "multi": multi, "name": name, "options": [],
        "query": {"qryType": 1, "query": query, "refId": f"PrometheusVariableQueryEditor-{name}"},
        "refresh": 2, "regex": regex, "skipUrlSync": False, "sort": 1, "type": "query",
    }


def selector_labels() -> list[str]:
    """The deployment labels every query is scoped to, outermost first (cluster, namespace, job, instance)."""
    return [*CFG.group_labels, "job", "instance"]


def selector_params() -> list[str]:
    """URL parameters that carry the selector variables into a linked dashboard."""
    return [f"${{{name}:queryparam}}" for name in selector_labels()]


def selector_matchers(upto: int | None = None) -> str:
    return ", ".join(f'{name}=~"${name}"' for name in selector_labels()[:upto])


def selector_vars() -> list[dict[str, Any]]:
    """datasource, the grouping labels, job (default: the config's) and instance (replica), each
    query scoped to the variables before it."""
    out = [datasource_var()]
    for i, name in enumerate(selector_labels()):
        sel = selector_matchers(i)
        query = f"label_values(mlmon_model_version_info{{{sel}}}, {name})" if sel else \
            f"label_values(mlmon_model_version_info, {name})"
        if name == "job":
            out.append(query_var(name, "Job", query, default=CFG.job))
        else:
            out.append(query_var(name, "Replica" if name == "instance" else name.title(), query))
    return out


def scope_dashboard(d: dict[str, Any]) -> dict[str, Any]:
    """Add the selector variables' matchers to every query written without them."""
    sel = selector_matchers()

    def fix(expr: str) -> str:
        return scope(expr, sel, sel)

    for p in d["panels"]:
        for t in p.get("targets", []):
            t["expr"] = fix(t["expr"])
    for a in d["annotations"]["list"]:
        if "expr" in a:
            a["expr"] = fix(a["expr"])
    for v in d["templating"]["list"]:
        if v["type"] == "query" and v["name"] not in selector_labels():
            v["definition"] = v["query"]["query"] = fix(v["definition"])
    return d


def model_var(multi: bool = True) -> dict[str, Any]:
    return query_var("model", "Model", "label_values(mlmon_model_version_info, model)",
                     multi=multi, include_all=multi)


def version_var() -> dict[str, Any]:
    return query_var("version", "Version", f"label_values(mlmon_model_version_info{{{M}}}, version)")


def deploy_expr() -> str:
    """A version starts taking traffic: its fleet-wide 5m prediction rate is positive now and was not
    ``deploy_lookback`` ago. Derived from traffic in Prometheus, not from the sidecars' in-memory
    first-seen times, so restarting a sidecar (counters reset, rate() does not) draws no marker."""
    now = f"sum by (model, version) (model_version:mlmon_predictions:rate5m{{{M}}} > 0)"
    before = (f"sum by (model, version) "
              f"(model_version:mlmon_predictions:rate5m{{{M}}} offset {CFG.deploy_lookback} > 0)")
    return f"{now} unless {before}"


def query_annotation(name: str, expr: str, color: str, tags: str, title: str, text: str, *,
                     enable: bool = True) -> dict[str, Any]:
    """A Prometheus annotation: one region per run of consecutive points of each series."""
    return {"datasource": DS, "enable": enable, "hide": False, "iconColor": color, "name": name, "expr": expr,
            "step": "1m", "tagKeys": tags, "textFormat": text, "titleFormat": title, "useValueForTime": False}


def deploy_annotation() -> dict[str, Any]:
    return query_annotation("Deploys", deploy_expr(), "purple", "model,version", "Deploy {{model}} {{version}}",
                            "{{model}} version {{version}} started taking traffic")


def serving_expr() -> str:
    """Versions carrying at least ``serving_min_share`` of each model's predictions now, with their share."""
    share = (f"sum by (model, version) (model_version:mlmon_predictions:rate5m{{{M}}}) "
             f"/ on (model) group_left () (sum by (model) (model:mlmon_predictions:rate5m{{{M}}}) > 0)")
    return f"{share} >= {CFG.serving_min_share:g}"


def alert_annotation() -> dict[str, Any]:
    return query_annotation("Firing alerts", f"max by (alertname, severity, model) ({ALERTS}, {ALERT_M}}})", "red",
                            "severity,model", "{{alertname}}", "{{model}} ({{severity}})", enable=False)


def builtin_annotation() -> dict[str, Any]:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard"}


def dashboard_links(this: str) -> list[dict[str, Any]]:
    """Links to the three other mlmon dashboards, carrying variables and time range."""
    out = []
    for key, (uid, title) in DASHBOARDS.items():
        if key == this:
            continue
        out.append({"asDropdown": False, "icon": "dashboard", "includeVars": True, "keepTime": True,
                    "tags": [], "targetBlank": False, "title": title.split(" / ")[1],
                    "tooltip": f"Open {title}", "type": "link", "url": f"/d/{uid}/{uid}"})
    return out


# --------------------------------------------------------------------------------------------
# Layout: left-to-right on Grafana's 24-column grid; ids in order of appearance
# --------------------------------------------------------------------------------------------

class Board:
    def __init__(self, key: str, description: str, variables: list[dict[str, Any]],
                 annotations: list[dict[str, Any]], time_from: str = "now-6h") -> None:
        self.key = key
        self.uid, self.title = DASHBOARDS[key]
        self.description = description
        self.variables = variables
        self.annotations = annotations
        self.time_from = time_from
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.line_h = 0

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_h
        self.x = self.line_h = 0

    def row(self, title: str, **extra: Any) -> None:
        self._newline()
        self.panels.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                            "panels": [], "title": title, "type": "row", **extra})
        self.y += 1

    def add(self, p: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        p["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(p)
        self.x += w
        self.line_h = max(self.line_h, h)

    def render(self) -> dict[str, Any]:
        for i, p in enumerate(self.panels, start=1):
            p["id"] = i
        return {
            "annotations": {"list": [builtin_annotation(), *self.annotations]},
            "description": self.description,
            "editable": False,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": dashboard_links(self.key),
            "liveNow": False,
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": TAGS,
            "templating": {"list": [*selector_vars(), *self.variables]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


# --------------------------------------------------------------------------------------------
# Overview (executive)
# --------------------------------------------------------------------------------------------

HEALTH_STEPS = thresholds((None, RED), (0.5, ORANGE), (0.8, GREEN))
BUDGET_STEPS = thresholds((None, RED), (0, ORANGE), (0.25, YELLOW), (0.5, GREEN))


def burn_steps() -> dict[str, Any]:
    """Colour steps at the policy's burn-rate factors: yellow from 1 (budget-neutral), orange at the
    ticket factors above 1, red at the page factors."""
    steps: dict[float, str] = {1.0: YELLOW}
    for b in CFG.burn_rates:
        if b.factor > 1:
            steps[b.factor] = RED if b.action == "page" else ORANGE
    return thresholds((None, GREEN), *sorted(steps.items()))
COUNT_BAD_STEPS = thresholds((None, GREEN), (1, RED))
HIGHER_BETTER = "accuracy|balanced_accuracy|precision|recall|f1|roc_auc|pr_auc|r2"
LOWER_BETTER = "log_loss|brier|mae|mse|rmse|mape"
VS_BASELINE_HELP = ("vs baseline = live quality − training-baseline quality, in the metric's own units (0.02 "
                    "= two points of accuracy), for the worst replica: the lowest for higher-is-better metrics, "
                    "the highest for error metrics. The alert threshold is baseline + the configured offset "
                    "on the same scale.")


def worst_quality(matchers: str) -> str:
    """Each metric's worst replica: min for higher-is-better metrics, max for error metrics."""
    q = "mlmon_model_quality"
    return (f'min by (model, metric) ({q}{{{matchers}, class="", metric=~"{HIGHER_BETTER}"}}) '
            f'or max by (model, metric) ({q}{{{matchers}, class="", metric=~"{LOWER_BETTER}"}})')


def vs_baseline(matchers: str) -> str:
    """The one definition of "vs baseline" on every dashboard: quality − baseline (absolute)."""
    base_m = ", ".join(m for m in matchers.split(", ") if not m.startswith("version") and not m.startswith("metric"))
    return (f"({worst_quality(matchers)}) - on (model, metric) "
            f"max by (model, metric) (mlmon_model_quality_baseline{{{base_m}}})")


def quality_alert_expr() -> str:
    """MlmonModelQualityDegraded's own expression, read from its rule spec, so the panel the alert's
    dashboard_url opens can never disagree with the alert."""
    from mixin.rules import alert_expr  # rules import this module for panel ids
    return alert_expr("quality.alerts", "MlmonModelQualityDegraded")


def past_threshold(matchers: str) -> str:
    """The alert's expression restricted to the selected model, version and metric."""
    return (f"({quality_alert_expr().strip()}) and on (job, instance, model, version, metric) "
            f'mlmon_model_quality{{{matchers}, class=""}}')


def past_threshold_count(matchers: str) -> str:
    return f"count({past_threshold(matchers)}) or on() vector(0)"


def overview() -> dict[str, Any]:
    b = Board("overview", "Executive view: how every model in production is doing, one row per model.",
              [model_var(), version_var()], [deploy_annotation()], time_from="now-24h")
    svc, drift, qual = DASHBOARDS["service"][0], DASHBOARDS["drift"][0], DASHBOARDS["quality"][0]

    b.row("Fleet")
    b.add(stat("Models monitored", "Models that mlmon has seen traffic for (any version).",
               [target(f"count(count by (model) (mlmon_model_version_info{{{M}}}))", "models")],
               "none", color={"mode": "fixed", "fixedColor": BLUE}), 6, 4)
    b.add(stat("Predictions per second", "Predictions received by mlmon across the selected models.",
               [target(f"sum({rate('mlmon_predictions_total', MV)})", "predictions/s")],
               PRED_S, graph=True, color={"mode": "fixed", "fixedColor": BLUE}), 6, 4)
    b.add(stat("Lowest health score", "The worst model's composite health score (0 = broken, 1 = healthy). "
               "It combines drift, data quality, model quality and SLO burn; see docs/metrics.md.",
               [target(f"min(mlmon_model_health_score{{{M}}})", "lowest health")],
               "percentunit", steps=HEALTH_STEPS, min=0, max=1), 6, 4)
    b.add(stat("Firing alerts", "mlmon alerts firing now, by severity. Critical alerts page the on-call.",
               # Instant: over a range, the vector(0) fallback from before the first alert would be shown
               # as a stale "0" next to the firing counts (it is a different series from {severity=...}).
               [target(f'sum by (severity) ({ALERTS}, {ALERT_M}}}) or on() vector(0)', "{{severity}}",
                       instant=True)],
               "none", steps=COUNT_BAD_STEPS, text_mode="value_and_name",
               links=[link("Service dashboard", svc)]), 6, 4)

    b.add(table("Active models and versions", "Every model with the versions taking traffic now and their "
                "share of its predictions (5m rate, all replicas).",
                [target(serving_expr(), instant=True, fmt="table")], "percentunit", sort_by="model", decimals=1,
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "job": True}, "indexByName": {"model": 0, "version": 1},
                    "renameByName": {"Value": "Share of traffic"}}}]), 12, 5)
    b.add(table("Incidents (last 30 days)", "mlmon alerts that fired in the last 30 days, by alert and severity: "
                "how many distinct alerts (label sets) fired. Panel time range fixed to 30 days.",
                [target(f'count by (alertname, severity) (max_over_time({ALERTS}, {ALERT_M}}}[{RANGE}]))',
                        instant=True, fmt="table")], "none", sort_by="Alerts fired",
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True}, "indexByName": {"alertname": 0, "severity": 1},
                    "renameByName": {"Value": "Alerts fired"}}}], timeFrom="30d"), 12, 5)

    b.row("$model", repeat="model")
    b.add(stat("Versions serving", "The versions taking traffic now and their share of the model's "
               "predictions (5m rate, all replicas); a version under the configured minimum share (a "
               "handful of canary records) is not listed.",
               [target(serving_expr(), "{{version}}", instant=True)],
               "percentunit", text_mode="value_and_name", decimals=1,
               color={"mode": "fixed", "fixedColor": BLUE}), 4, 4)
    b.add(stat("Traffic", "Predictions per second for this model, all selected versions.",
               [target(f"sum({rate('mlmon_predictions_total', MV)})", "predictions/s")],
               PRED_S, graph=True, color={"mode": "fixed", "fixedColor": BLUE},
               links=[link("Service dashboard", svc, "var-model=${model}")]), 5, 4)
    b.add(stat("Health score", "Composite health in [0, 1]: 1 is healthy; below 0.5 needs attention today.",
               [target(f"min(mlmon_model_health_score{{{M}}})", "health")],
               "percentunit", steps=HEALTH_STEPS, min=0, max=1, graph=True), 5, 4)
    b.add(stat("Drifted features", "Input features whose drift is over their threshold now "
               "(the model output is not counted). Click through to see which.",
               [target(f"max(mlmon_drifted_features{{{M}}})", "drifted")],
               "none", steps=COUNT_BAD_STEPS, links=[link("Drift dashboard", drift, "var-model=${model}")]), 5, 4)
    b.add(stat("Firing alerts", "mlmon alerts firing now for this model.",
               [target(f'count({ALERTS}, {M}}}) or on() vector(0)', "alerts")],
               "none", steps=COUNT_BAD_STEPS, links=[link("Service dashboard", svc, "var-model=${model}")]), 5, 4)
    b.add(stat("SLO error budget remaining (30d)", "Share of each SLO's 30-day error budget still unspent. "
               "Below 0 the objective is already missed for the period.",
               [target(budget_remaining("slo", M), "{{slo}}")],
               "percentunit", steps=BUDGET_STEPS, text_mode="value_and_name", max=1), 8, 4)
    b.add(stat("SLO burn rate (1h)", "How fast each SLO burns its error budget over the last hour: 1 = exactly "
               "on budget, 14.4 = the whole 30-day budget gone in about 2 days (pages).",
               [target(burn_rate("1h", "slo", M), "{{slo}}")],
               TIMES, steps=burn_steps(), text_mode="value_and_name", decimals=1), 8, 4)
    b.add(stat("Quality vs baseline", VS_BASELINE_HELP + " Red: a replica is past the metric's alert threshold "
               "(the MlmonModelQualityDegraded condition, thresholds from the exporter config).",
               [target(vs_baseline(f'{M}, version=~"$version"'), "{{metric}}")],
               "none", text_mode="value_and_name", decimals=3, color={"mode": "fixed", "fixedColor": BLUE},
               links=[link("Quality dashboard", qual, "var-model=${model}")]), 4, 4)
    b.add(stat("Replicas past quality threshold", "Replica × metric pairs whose labelled quality is past its "
               "alert threshold now: the MlmonModelQualityDegraded expression (without its for: 30m).",
               [target(past_threshold_count(f'{M}, version=~"$version"'), "past threshold", instant=True)],
               "none", steps=COUNT_BAD_STEPS,
               links=[link("Quality dashboard", qual, "var-model=${model}")]), 4, 4)
    return b.render()


# --------------------------------------------------------------------------------------------
# Service (on-call)
# --------------------------------------------------------------------------------------------

def service() -> dict[str, Any]:
    b = Board("service", "On-call view: latency against the SLO, traffic, errors, burn rates, alerts and "
              "freshness. Purple markers are deploys (first time a version was seen).",
              [model_var(), version_var()], [deploy_annotation(), alert_annotation()],
              time_from="now-3h")
    preds = "mlmon_predictions_total"
    pred_rate = f"sum by (model, version) ({rate(preds, MV)})"
    err_rate = zero_if_absent(f"sum by (model, version) ({rate('mlmon_prediction_errors_total', MV)})",
                              pred_rate)

    b.row("At a glance")
    b.add(stat("p99 latency", "99th percentile model latency over the last few scrapes, worst selected model.",
               [target(f"max({quantile(0.99, 'mlmon_prediction_latency_seconds', MV, 'model')})", "p99")],
               "s", color_mode="value", graph=True, color={"mode": "fixed", "fixedColor": BLUE}), 4, 4)
    b.add(stat("Throughput", "Predictions per second across the selected models and versions.",
               [target(f"sum({rate(preds, MV)})", "predictions/s")],
               PRED_S, color_mode="value", graph=True, color={"mode": "fixed", "fixedColor": BLUE}), 4, 4)
    b.add(stat("Error ratio", "Share of predictions the model server reported as failed.",
               [target(f"sum({err_rate}) / (sum({pred_rate}) > 0)", "errors")],
               "percentunit", steps=thresholds((None, GREEN), (0.001, YELLOW), (0.01, RED)), decimals=2), 4, 4)
    b.add(stat("Lowest SLO budget left (30d)", "The most consumed SLO's remaining 30-day error budget.",
               [target(f"min({budget_remaining()})", "budget left")],
               "percentunit", steps=BUDGET_STEPS, max=1), 4, 4)
    b.add(stat("Firing alerts", "mlmon alerts firing now for the selected models; details below.",
               [target(f'count({ALERTS}, {ALERT_M}}}) or on() vector(0)', "alerts")],
               "none", steps=COUNT_BAD_STEPS), 4, 4)
    b.add(stat("Last prediction", "Seconds since the last prediction reached mlmon (oldest selected model). "
               "Large values mean the model server stopped sending or stopped serving.",
               [target(f"max(time() - max by (model) (mlmon_last_prediction_timestamp_seconds{{{MV}}}))", "age")],
               "s", steps=thresholds((None, GREEN), (300, YELLOW), (900, RED))), 4, 4)

    b.row("Latency and traffic")
    b.add(timeseries("Latency percentiles vs SLO", "p50 / p95 / p99 of model latency (from the latency "
                     "histogram) against each latency SLO's threshold (dashed red).",
                     [target(quantile(0.5, "mlmon_prediction_latency_seconds", MV, "model"), "{{model}} p50"),
                      target(quantile(0.95, "mlmon_prediction_latency_seconds", MV, "model"), "{{model}} p95"),
                      target(quantile(0.99, "mlmon_prediction_latency_seconds", MV, "model"), "{{model}} p99"),
                      target(f"max by (model, slo) (mlmon_slo_latency_threshold_seconds{{{M}}})",
                             "{{model}} SLO {{slo}}")],
                     "s", overrides=[dashed(".* SLO .*", RED)], calcs=["lastNotNull", "max"]), 12, 8)
    b.add(timeseries("Throughput by version", "Predictions per second per model and version; a canary "
                     "shows up as a second version line.",
                     [target(pred_rate, "{{model}} {{version}}")], PRED_S, calcs=["lastNotNull", "mean"]), 12, 8)
    b.add(timeseries("Error ratio", "Failed predictions / all predictions, per model and version.",
                     [target(f"{err_rate} / ({pred_rate} > 0)", "{{model}} {{version}}")], "percentunit",
                     min=0), 8, 8)
    b.add(timeseries("Rejected records", "Records mlmon refused, by reason (invalid_record, payload_too_large, "
                     "malformed_json, ...). Rejections never reach the model metrics; fix the sender.",
                     [target(f"sum by (model, reason) ({rate('mlmon_ingest_rejected_total', M)})",
                             "{{model}} {{reason}}")], REC_S, min=0), 8, 8)
    missing = "mlmon_feature_missing_total"
    missing_matchers = f'{M}, feature!="__prediction__"'
    all_preds = f"sum by (model) ({rate(preds, M)})"
    missing_sum = zero_if_absent(f"sum by (model) ({rate(missing, missing_matchers)})", all_preds)
    missing_worst = zero_if_absent(
        f"max by (model) (sum by (model, feature) ({rate(missing, missing_matchers)}))", all_preds)
    b.add(timeseries("Feature availability", "Share of records with every feature present. Lower bound: "
                     "1 - (missing values summed over features) / records, exact when a record misses at "
                     "most one feature. 'worst feature' is the single feature missing most often.",
                     [target(f"clamp_min(1 - {missing_sum} / {all_preds}, 0)", "{{model}} all features"),
                      target(f"1 - {missing_worst} / {all_preds}", "{{model}} worst feature")],
                     "percentunit", max=1, steps=thresholds((None, RED), (0.95, GREEN)),
                     line_thresholds=True), 8, 8)

    b.row("SLOs")
    b.add(stat("Error budget remaining (30d)", "Share of each SLO's 30-day error budget still unspent.",
               [target(budget_remaining(), "{{model}} {{slo}}")],
               "percentunit", steps=BUDGET_STEPS, text_mode="value_and_name", max=1), 6, 9)
    policy = "; ".join(f"{CFG.severities[b.action]} at {b.factor:g}x over {b.long} and {b.short}"
                       for b in CFG.burn_rates)
    windows = [w for w in CFG.windows() if w != CFG.slo_period]
    b.add(bargauge("Burn rate now, per window", "Error-budget burn rate per SLO over every window the alerts "
                   f"use ({policy}): an alert fires when both windows of a pair exceed the factor.",
                   [target(burn_rate(w), f"{{{{model}}}} {{{{slo}}}} {w}", instant=True) for w in windows],
                   TIMES, steps=burn_steps(), decimals=2, min=0, max=20), 9, 9)
    b.add(timeseries("Burn rate over time", "Burn rate over every alerting window. Dashed lines: the "
                     "burn-rate factors of the policy.",
                     [target(burn_rate(w), f"{{{{model}}}} {{{{slo}}}} {w}") for w in windows],
                     TIMES, steps=burn_steps(), line_thresholds=True, min=0), 9, 9)

    sidecars(b)

    b.row("Alerts and freshness")
    b.add(table("Firing alerts", "mlmon alerts firing now (from Prometheus's ALERTS series). The runbook link "
                "is in each alert's annotations in Alertmanager.",
                [target(f"{ALERTS}, {ALERT_M}}}", instant=True, fmt="table")],
                "none", sort_by="severity",
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
                    "indexByName": {"alertname": 0, "severity": 1, "model": 2}, "renameByName": {}}}]), 10, 8)
    b.add(bargauge("Drift alerts per model", "Drift alerts (feature and prediction drift) firing now, per model; "
                   "the Drift dashboard says which features.",
                   [target(f'count by (model) ({ALERTS}, {M}, alertname=~"Mlmon.*Drift"}}) '
                           f'or count by (model) (mlmon_model_version_info{{{M}}}) * 0', "{{model}}", instant=True)],
                   "none", steps=COUNT_BAD_STEPS, min=0,
                   links=[link("Drift dashboard", DASHBOARDS["drift"][0], "var-model=${model}")]), 4, 8)
    b.add(timeseries("Data freshness", "Seconds since the last prediction reached mlmon, and since the last "
                     "evaluation (drift/quality) ran. Evaluation age above a few intervals means it is stuck.",
                     [target(f"time() - max by (model, version) (mlmon_last_prediction_timestamp_seconds{{{MV}}})",
                             "{{model}} {{version}} last prediction"),
                      target(f"time() - max by (model) (mlmon_evaluation_timestamp_seconds{{{M}}})",
                             "{{model}} last evaluation")],
                     "s", min=0), 10, 8)
    return b.render()


def sidecars(b: Board) -> None:
    """Self-monitoring: what each mlmon replica costs and whether it keeps up (resource use per replica)."""
    b.row("Sidecars (self-monitoring)")
    b.add(stat("Sidecars up", "Replicas Prometheus scrapes successfully out of all mlmon targets of the job.",
               [target("sum(up)", "up"), target("count(up)", "targets")],
               "none", text_mode="value_and_name", color={"mode": "fixed", "fixedColor": BLUE}), 4, 8)
    b.add(timeseries("Memory per replica", "Resident memory of each mlmon process. Memory is bounded by the "
                     "window configuration (models × features × bins × buckets); a replica near its container "
                     "limit needs a larger limit or a smaller window (see the runbooks).",
                     [target("max by (instance) (process_resident_memory_bytes)", "{{instance}}")],
                     "bytes", min=0), 5, 8)
    b.add(timeseries("CPU per replica", "CPU seconds per second (cores) used by each mlmon process.",
                     [target(f"sum by (instance) ({rate('process_cpu_seconds_total', '')})", "{{instance}}")],
                     "suffix: cores", min=0), 5, 8)
    b.add(timeseries("Evaluation duration", "Time the last drift/quality evaluation took per replica and model; "
                     "it should stay well under the evaluation interval.",
                     [target(f"max by (instance, model) (mlmon_evaluation_duration_seconds{{{M}}})",
                             "{{instance}} {{model}}")], "s", min=0), 5, 8)
    b.add(timeseries("Scrape duration", "p99 time mlmon takes to render /metrics, and the whole scrape as "
                     "Prometheus measures it (network included); near the scrape timeout, scrapes fail.",
                     [target("histogram_quantile(0.99, sum by (instance, le) "
                             f"({rate('mlmon_scrape_duration_seconds_bucket', '')}))", "{{instance}} render p99"),
                      target("max by (instance) (scrape_duration_seconds)", "{{instance}} scrape")],
                     "s", min=0), 5, 8)


# --------------------------------------------------------------------------------------------
# Drift (debug)
# --------------------------------------------------------------------------------------------

RATIO_STEPS = thresholds((None, GREEN), (0.8, YELLOW), (1, RED))
FEATURES = f'{M}, feature!="__prediction__"'


def distribution(title: str, description: str, feature: str) -> dict[str, Any]:
    """Bar chart: share of each coarse bin over the selected range vs the baseline share."""
    sel = f'{M}, feature="{feature}"'
    now = f"sum by (bin) ({increase('mlmon_feature_bin_total', sel, RANGE)})"
    total = f"sum({increase('mlmon_feature_bin_total', sel, RANGE)})"
    return barchart(title, description,
                    [target(f"{now} / on() group_left {total}", "now", instant=True, fmt="table"),
                     target(f"max by (bin) (mlmon_baseline_bin_ratio{{{sel}}})", "baseline", instant=True,
                            fmt="table")],
                    "percentunit", x_field="bin", min=0,
                    transformations=[*merge_table({"Value #A": "Now (selected range)", "Value #B": "Baseline"}),
                                     {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "bin"}]}}],
                    overrides=[{"matcher": {"id": "byName", "options": "Baseline"}, "properties": [
                        {"id": "color", "value": {"fixedColor": GREY, "mode": "fixed"}}]}])


FLEET = "model_feature:mlmon_feature_drift_fleet"
FLEET_WINDOWS = (("1h", "last hour"), ("5m", "last 5 minutes"))


def fleet_over_threshold(window: str) -> str:
    """Fleet chi-square / its threshold per feature: the two recordings carry the same labels."""
    return (f"max by (feature) ({FLEET}_chi2:increase{window}{{{M}}} "
            f"/ {FLEET}_threshold:increase{window}{{{M}}})")


def fleet_drift(b: Board) -> None:
    """Fleet drift (mlmon.drift.fleet.rules): the two-sample chi-square of every replica's summed
    coarse-bin counters against the baseline, over the last hour and the last 5 minutes, which is
    what MlmonFeatureDrift / MlmonPredictionDrift page on; each replica's own verdict beside it."""
    b.row("Fleet drift (all replicas together)")
    for window, words in FLEET_WINDOWS:
        b.add(timeseries(f"Fleet chi-square / threshold ({words})",
                         f"Chi-square of the {words} of every replica's traffic together against the baseline "
                         "(mergeable coarse-bin counters), divided by its threshold in force: the larger of the "
                         "critical value at the configured false-alarm rate and the relevance floor n_eff × w². "
                         "At or over 100% (dashed) the feature is flagged once the window holds min_samples "
                         f"records; MlmonFeatureDrift fires on either window. Recording rules "
                         f"{FLEET}_chi2:increase{window} / {FLEET}_threshold:increase{window}.",
                         [target(fleet_over_threshold(window), "{{feature}}")], "percentunit",
                         steps=thresholds((None, GREEN), (1, RED)), line_thresholds=True, min=0,
                         calcs=["lastNotNull", "max"]), 12, 8)
    verdict = {"0": {"text": "no", "index": 0}, "1": {"text": "DRIFT", "index": 1}}
    b.add(table("Fleet verdict per feature", "The fleet verdict of each window (1 = the chi-square of every "
                "replica's traffic together is over its threshold on at least min_samples records), the records "
                "each window holds across the fleet, and how many replicas flag the feature on their own "
                "(mlmon_feature_drift_detected, per replica, for debugging: a fleet drift can show in no "
                "single replica).",
                [target(f"max by (feature) ({FLEET}_detected:increase1h{{{M}}})", instant=True, fmt="table"),
                 target(f"max by (feature) ({FLEET}_detected:increase5m{{{M}}})", instant=True, fmt="table"),
                 target(f"sum by (feature) (model_feature:mlmon_feature_samples:increase1h{{{M}}})",
                        instant=True, fmt="table"),
                 target(f"sum by (feature) (model_feature:mlmon_feature_samples:increase5m{{{M}}})",
                        instant=True, fmt="table"),
                 target(f"sum by (feature) (mlmon_feature_drift_detected{{{M}}})", instant=True, fmt="table")],
                "none", sort_by="Fleet 1h", decimals=0,
                transformations=merge_table({"feature": "Feature", "Value #A": "Fleet 1h", "Value #B": "Fleet 5m",
                                             "Value #C": "Records 1h", "Value #D": "Records 5m",
                                             "Value #E": "Replicas flagging"}),
                overrides=[{"matcher": {"id": "byName", "options": name}, "properties": [
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    {"id": "thresholds", "value": COUNT_BAD_STEPS},
                    {"id": "color", "value": {"mode": "thresholds"}},
                    {"id": "mappings", "value": [{"type": "value", "options": verdict}]}]}
                    for name in ("Fleet 1h", "Fleet 5m")]), 12, 9)
    b.add(state_timeline("Replica verdicts", "Each replica's own verdict per feature over time "
                         "(mlmon_feature_drift_detected: its full or recent window over the threshold in force). "
                         "For debugging beside the fleet verdict; it never pages on its own.",
                         [target(f"max by (instance, feature) (mlmon_feature_drift_detected{{{M}}})",
                                 "{{instance}} {{feature}}")], "none", steps=COUNT_BAD_STEPS,
                         mappings=[{"type": "value", "options": verdict}]), 12, 9)


def drift() -> dict[str, Any]:
    b = Board("drift", "Debug view: which features drift, how their distributions moved against the training "
              "baseline, and data-quality problems. Scores are computed by mlmon over its window "
              "(default 1h) and are absent below min_samples.",
              [model_var(multi=False), version_var(),
               query_var("feature", "Feature", f"label_values(mlmon_baseline_bin_ratio{{{FEATURES}}}, feature)",
                         multi=False, include_all=False)],
              [deploy_annotation()], time_from="now-24h")
    # Each feature against the threshold in force of its own detection method (the only method with
    # a threshold series), at the window's n, so every feature appears on one scale.
    threshold = f'(mlmon_feature_drift_threshold{{{FEATURES}}} > 0)'
    own_ratio = f"mlmon_feature_drift_score{{{FEATURES}}} / {threshold}"
    score_ratio = f"max by (feature) ({own_ratio})"

    b.row("Window")
    b.add(stat("Window fill (records / min_samples)", "Records in mlmon's current drift window divided by the "
               "model's configured min_samples, for the emptiest selected replica. Below 100% (red) drift is not "
               "computed on that replica and its scores below are empty.",
               [target(f"min(mlmon_window_samples{{{M}}} / on (job, instance, model) "
                       f"mlmon_window_min_samples{{{M}}})", "fill")],
               "percentunit", steps=thresholds((None, RED), (1, GREEN)), graph=True, decimals=0), 6, 4)
    b.add(stat("Drifted features", "Input features over their drift threshold now (detection method of each "
               "feature, as configured).", [target(f"max(mlmon_drifted_features{{{M}}})", "drifted")],
               "none", steps=COUNT_BAD_STEPS), 6, 4)
    b.add(stat("Prediction drift", "Whether the model's output distribution (__prediction__) drifted from the "
               "baseline: often the first sign of a problem even without labels.",
               [target(f'max(mlmon_feature_drift_detected{{{M}, feature="__prediction__"}})', "prediction")],
               "none", steps=COUNT_BAD_STEPS,
               mappings=[{"type": "value", "options": {"0": {"text": "stable", "index": 0},
                                                       "1": {"text": "DRIFT", "index": 1}}}]), 6, 4)
    b.add(stat("Last evaluation", "Seconds since mlmon last evaluated drift and quality for this model.",
               [target(f"time() - max(mlmon_evaluation_timestamp_seconds{{{M}}})", "age")],
               "s", steps=thresholds((None, GREEN), (120, YELLOW), (600, RED))), 6, 4)

    b.row("Drift by feature")
    b.add(table("Drift by feature", "Latest drift score per feature for its detection method (by default "
                "wasserstein for numeric, psi for categorical features), its threshold, score/threshold (red at "
                "1 or more) and whether the feature is flagged as drifted.",
                [target(f"max by (feature, method) (mlmon_feature_drift_score{{{FEATURES}}} and {threshold})",
                        instant=True, fmt="table"),
                 target(f"max by (feature, method) {threshold}", instant=True, fmt="table"),
                 target(f"max by (feature, method) ({own_ratio})", instant=True, fmt="table"),
                 target(f"max by (feature, method) (mlmon_feature_drift_detected{{{FEATURES}}} "
                        f"+ ignoring(method) group_left(method) (0 * {threshold}))", instant=True, fmt="table")],
                "none", sort_by="Score / threshold", decimals=3,
                transformations=merge_table({"feature": "Feature", "method": "Method", "Value #A": "Score",
                                             "Value #B": "Threshold", "Value #C": "Score / threshold",
                                             "Value #D": "Detected"}),
                overrides=[color_cells("Score / threshold", RATIO_STEPS, "percentunit"),
                           {"matcher": {"id": "byName", "options": "Feature"}, "properties": [
                               {"id": "links", "value": [{"title": "Drift detail of ${__value.raw}", "url":
                                link("", DASHBOARDS["drift"][0], "var-model=${model}&var-feature=${__value.raw}")
                                ["url"]}]}]},
                           {"matcher": {"id": "byName", "options": "Detected"}, "properties": [
                               {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                               {"id": "thresholds", "value": COUNT_BAD_STEPS},
                               {"id": "color", "value": {"mode": "thresholds"}},
                               {"id": "mappings", "value": [{"type": "value", "options": {
                                   "0": {"text": "no", "index": 0}, "1": {"text": "DRIFT", "index": 1}}}]}]}]),
          10, 10)
    b.add(state_timeline("Drift heatmap (score / threshold)", "Each feature's score divided by its threshold "
                         "over time: green below 80%, yellow approaching, red at or over the threshold.",
                         [target(score_ratio, "{{feature}}")], "percentunit", steps=RATIO_STEPS), 14, 10)
    b.add(timeseries("Drift score / threshold over time", "Every feature's drift score for its detection method "
                     "as a share of its own threshold, so all features share one scale: the dashed line at "
                     "100% is the threshold.", [target(score_ratio, "{{feature}}")], "percentunit",
                     steps=thresholds((None, GREEN), (1, RED)), line_thresholds=True, min=0,
                     calcs=["lastNotNull", "max"]), 24, 8)

    fleet_drift(b)

    b.row("Feature: $feature")
    b.add(distribution("$feature: distribution now vs baseline", "Share of records in each coarse bin of "
                       "$feature over the selected time range against the training baseline. Numeric bins are "
                       "baseline deciles (0..9); categorical bins are categories (rare ones as __other__).",
                       "$feature"), 12, 9)
    b.add(timeseries("$feature: drift score per method", "Every drift method's score for $feature over the full "
                     "window; for the detection method also the threshold in force (dashed: the null quantile at "
                     "the window's n at the configured false-alarm rate, raised to the relevance floor, so it falls "
                     "as the window fills), and the recent window's score against its own threshold.",
                     [target(f'max by (method) (mlmon_feature_drift_score{{{M}, feature="$feature"}})', "{{method}}"),
                      target(f'max by (method) (mlmon_feature_drift_threshold{{{M}, feature="$feature"}})',
                             "{{method}} threshold"),
                      target(f'max by (method) (mlmon_feature_drift_recent_score{{{M}, feature="$feature"}})',
                             "{{method}} recent"),
                      target(f'max by (method) (mlmon_feature_drift_recent_threshold{{{M}, feature="$feature"}})',
                             "{{method}} recent threshold")],
                     "none", overrides=[dashed(".* threshold", RED)], min=0), 12, 9)

    b.row("Prediction")
    b.add(distribution("Prediction distribution vs baseline", "Share of predictions per class (or per score "
                       "bin for regressions) over the selected range against the baseline.", "__prediction__"), 12, 8)
    share = (f"sum by (class) ({rate('mlmon_prediction_class_total', MV)}) "
             f"/ on() group_left sum({rate('mlmon_prediction_class_total', MV)})")
    b.add(timeseries("Predicted class share over time", "Share of each predicted class among all predictions.",
                     [target(share, "{{class}}")], "percentunit", stack=True, fill=40, min=0, max=1), 12, 8)

    b.row("Data quality")
    feature_preds = f"sum({rate('mlmon_predictions_total', M)})"
    for title, metric, check, what in [
        ("Missing values", "mlmon_feature_missing_total", "missing", "missing or non-finite"),
        ("Out-of-range values", "mlmon_feature_out_of_range_total", "out_of_range",
         "numeric and outside the training data's [min, max]"),
        ("Unexpected categories", "mlmon_feature_unexpected_category_total", "unexpected_category",
         "categorical and never seen in the training data"),
    ]:
        b.add(timeseries(title, f"Share of records whose value is {what}, per feature. Dashed: the configured "
                         "data-quality threshold.",
                         [target(f"sum by (feature) ({rate(metric, FEATURES)}) / on() group_left {feature_preds}",
                                 "{{feature}}"),
                          target(f'max(mlmon_data_quality_threshold_ratio{{{M}, check="{check}"}})', "threshold")],
                         "percentunit", overrides=[dashed("threshold", RED)], min=0), 6, 8)
    b.add(timeseries("Type errors and unknown fields", "Values of the wrong type per feature (for example text "
                     "in a numeric feature) and fields not in the baseline, per second.",
                     [target(f"sum by (feature) ({rate('mlmon_feature_type_errors_total', FEATURES)})",
                             "{{feature}} type errors"),
                      target(f"sum({rate('mlmon_unknown_features_total', M)})", "unknown fields")],
                     REC_S, min=0), 6, 8)
    return b.render()


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------

def quality() -> dict[str, Any]:
    b = Board("quality", "Model quality from joined ground-truth labels, against the training baseline and the "
              "alert threshold; label-free estimates; confusion matrix; label delay and coverage; fairness.",
              [model_var(multi=False), version_var(),
               query_var("metric", "Quality metric", f"label_values(mlmon_model_quality{{{M}}}, metric)")],
              [deploy_annotation()], time_from="now-7d")
    overall = f'{MV}, class=""'
    labels = "mlmon_labels_total"

    b.row("At a glance")
    b.add(stat("Accuracy, worst replica", "The lowest accuracy of any selected replica over mlmon's window, from "
               "predictions joined to their labels. Each replica judges its own window, so the fleet is as "
               "good as its worst replica; the per-replica panels below say which one.",
               [target(f'min(mlmon_model_quality{{{overall}, metric="accuracy"}})', "accuracy")],
               "percentunit", color_mode="value", graph=True, color={"mode": "fixed", "fixedColor": BLUE},
               decimals=1), 4, 4)
    b.add(stat("$metric vs baseline", VS_BASELINE_HELP,
               [target(vs_baseline(f'{MV}, metric="$metric"'), "{{metric}}")],
               "none", color_mode="value", decimals=3, color={"mode": "fixed", "fixedColor": BLUE}), 4, 4)
    b.add(stat("Estimated accuracy (label-free)", "Accuracy estimated from prediction confidence, available "
               "before labels arrive.",
               [target(f'max(mlmon_model_quality_estimated{{{M}, metric="accuracy"}})', "estimated")],
               "percentunit", color_mode="value", graph=True, color={"mode": "fixed", "fixedColor": BLUE},
               decimals=1), 4, 4)
    b.add(stat("Label coverage", "Labels joined / predictions over the selected range. Labels arrive late, so "
               "recent predictions are not yet covered.",
               [target(f"sum({increase(labels, M, RANGE)}) / sum({increase('mlmon_predictions_total', MV, RANGE)})",
                       "coverage", instant=True)],
               "percentunit", steps=thresholds((None, RED), (0.05, YELLOW), (0.2, GREEN)), max=1), 4, 4)
    b.add(stat("Label delay p50", "Median time from prediction to label over the selected range.",
               [target(f"histogram_quantile(0.5, sum by (le) "
                       f"({increase('mlmon_label_delay_seconds_bucket', M, RANGE)}))", "p50", instant=True)],
               "s", color_mode="value", color={"mode": "fixed", "fixedColor": BLUE}), 4, 4)
    b.add(stat("Label feed age / stale_after", "Time since the last label on the most starved selected replica, "
               "as a share of the model's configured labels.stale_after: at 100% or more (red) the label feed "
               "is stale, the MlmonLabelsStale condition.",
               [target(f"max(instance_model:mlmon_last_label_age_seconds:max{{{M}}} / on (job, instance, model) "
                       f"mlmon_labels_stale_after_seconds{{{M}}})", "age")],
               "percentunit", steps=thresholds((None, GREEN), (1, RED)), decimals=0), 4, 4)

    b.row("Replicas")
    b.add(table("Replicas past the alert threshold", "Every replica whose labelled quality is past its alert "
                "threshold now: MlmonModelQualityDegraded's own expression (without its for: 30m), so this "
                "table and the alert always agree. The alert's dashboard_url opens this panel.",
                [target(past_threshold(f'{MV}, metric=~"$metric"'), instant=True, fmt="table")],
                "none", sort_by="Quality now", decimals=3,
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "__name__": True, "class": True},
                    "indexByName": {"instance": 0, "model": 1, "version": 2, "metric": 3, "Value": 4},
                    "renameByName": {"Value": "Quality now"}}}]), 12, 8)
    b.add(timeseries("$metric per replica", "Labelled $metric of every selected replica and version, against "
                     "the training baseline (dashed grey) and the alert threshold (dashed red). The alert judges "
                     "each replica on its own window.",
                     [target(f'max by (instance, version) (mlmon_model_quality{{{overall}, metric="$metric"}})',
                             "{{instance}} {{version}}"),
                      target(f'max(mlmon_model_quality_baseline{{{M}, metric="$metric"}})', "baseline"),
                      target(f'max(mlmon_model_quality_threshold{{{M}, metric="$metric"}})', "threshold")],
                     "none", decimals=3, overrides=[dashed("baseline", GREY), dashed("threshold", RED)]), 12, 8)

    b.row("Quality over time")
    b.add(timeseries("$metric", "Labelled $metric per version over mlmon's window, against the training "
                     "baseline (dashed grey) and the alert threshold (dashed red). Higher is better for accuracy, "
                     "precision, recall, f1; lower for log_loss, brier, mae, rmse, mape.",
                     [target(f'min by (version) (mlmon_model_quality{{{overall}, metric="$metric", '
                             f'metric=~"{HIGHER_BETTER}"}}) or max by (version) (mlmon_model_quality{{{overall}, '
                             f'metric="$metric", metric=~"{LOWER_BETTER}"}})', "{{version}} (worst replica)"),
                      target(f'max(mlmon_model_quality_baseline{{{M}, metric="$metric"}})', "baseline"),
                      target(f'max(mlmon_model_quality_threshold{{{M}, metric="$metric"}})', "threshold")],
                     "none", decimals=3, overrides=[dashed("baseline", GREY), dashed("threshold", RED)],
                     repeat="metric", repeatDirection="h", maxPerRow=3), 8, 8)

    b.row("Estimates and fairness")
    b.add(timeseries("Realised vs estimated accuracy", "Accuracy from labels against the label-free estimate. "
                     "A growing gap means the estimate is unreliable for the current data (or labels are "
                     "late); the baseline is dashed.",
                     [target(f'min(mlmon_model_quality{{{overall}, metric="accuracy"}})', "realised (worst replica)"),
                      target(f'max(mlmon_model_quality_estimated{{{M}, metric="accuracy"}})', "estimated"),
                      target(f'max(mlmon_model_quality_baseline{{{M}, metric="accuracy"}})', "baseline")],
                     "percentunit", overrides=[dashed("baseline", GREY)]), 12, 8)
    b.add(timeseries("Fairness gaps by attribute", "Largest difference between groups of each protected "
                     "attribute (demographic parity: positive-prediction rate; equal opportunity: recall). "
                     "Dashed: the configured threshold.",
                     [target(f"max by (attribute, metric) (mlmon_fairness_gap{{{M}}})", "{{attribute}} {{metric}}"),
                      target(f"max by (metric) (mlmon_fairness_gap_threshold{{{M}}})", "{{metric}} threshold")],
                     "percentunit", overrides=[dashed(".* threshold", RED)], min=0), 12, 8)

    b.row("Confusion matrix (selected range)")
    conf = f"sum by (actual, predicted) ({increase('mlmon_confusion_total', MV, RANGE)})"
    matrix = [{"id": "groupingToMatrix", "options": {"columnField": "predicted", "rowField": "actual",
                                                     "valueField": "Value"}}]
    b.add(table("Confusion matrix (counts)", "Joined outcomes over the selected range: rows are actual labels, "
                "columns predicted classes.", [target(conf, instant=True, fmt="table")], "short",
                cell="color-background", color={"mode": "continuous-BlPu"}, transformations=matrix), 12, 9)
    b.add(table("Confusion matrix (share of actual)", "Each row divided by its total: the diagonal is each "
                "class's recall.",
                [target(f"{conf} / on(actual) group_left sum by (actual) "
                        f"({increase('mlmon_confusion_total', MV, RANGE)})", instant=True, fmt="table")],
                "percentunit", cell="color-background", color={"mode": "continuous-BlPu"}, decimals=1,
                transformations=matrix), 12, 9)

    b.row("Labels")
    delay = "mlmon_label_delay_seconds"
    b.add(timeseries("Label delay", "Time from prediction to ground-truth label: p50, p90, p99.",
                     [target(quantile(q, delay, M, "model"), f"p{round(q * 100)}") for q in (0.5, 0.9, 0.99)],
                     "s", min=0), 8, 8)
    b.add(timeseries("Label coverage", "Labels joined per prediction made in the same interval. Labels arrive "
                     "late, so this lags traffic changes by the label delay.",
                     [target(f"sum({rate(labels, M)}) / sum({rate('mlmon_predictions_total', MV)})", "coverage")],
                     "percentunit", min=0), 8, 8)
    b.add(timeseries("Label pipeline", "Labels joined, without a matching prediction, duplicated, or expired "
                     "(ttl / capacity) per second; and labels still waiting for a match.",
                     [target(f"sum({rate(labels, M)})", "joined"),
                      target(f"sum({rate('mlmon_labels_unmatched_total', M)})", "unmatched"),
                      target(f"sum({rate('mlmon_labels_duplicate_total', M)})", "duplicate"),
                      target(f"sum by (reason) ({rate('mlmon_labels_expired_total', M)})", "expired {{reason}}")],
                     LABELS_S, min=0), 8, 8)
    return b.render()


# --------------------------------------------------------------------------------------------

BUILDERS = {"overview": overview, "service": service, "drift": drift, "quality": quality}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_dashboard_objects(cfg: MixinConfig) -> dict[str, dict[str, Any]]:
    """Dashboard key → dashboard, built for ``cfg``."""
    global CFG
    CFG = cfg
    return {key: scope_dashboard(build()) for key, build in BUILDERS.items()}


def build_dashboards(cfg: MixinConfig) -> dict[str, str]:
    """File name → JSON text for every dashboard."""
    return {f"{key}.json": render(d) for key, d in build_dashboard_objects(cfg).items()}
