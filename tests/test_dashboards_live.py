"""The Grafana dashboards against a real stack: every query returns data, every metric exists.

One stack for the module: the exporter fed by the demo churn model through the real HTTP API,
drifting from the start, with labels ~0.5 s after each prediction, scraped every second by a
real Prometheus that loads the shipped recording and alert rules (``for:`` shortened to 5 s).

* Every query of every dashboard — panel targets, annotations, and the ``label_values()`` of the
  template variables (through the label-values API with ``match[]``, as Grafana runs them) — with
  the template variables replaced by values the stack really has and Grafana's built-in interval
  variables by what Grafana would pick, returns data: at least one sample that is a number (a
  result of only NaN, e.g. 0/0, counts as empty) or at least one variable value. A query that legitimately
  returns nothing in this setup must be listed in ``EXPECTED_EMPTY`` with the reason, and fails
  the test if it does return data, so the list stays honest.
* Every metric name the dashboards use is in the exporter's live exposition (histogram series
  ``_bucket`` / ``_count`` / ``_sum`` resolved to their histogram family), is recorded by a rule in
  ``alerting/rules/*.yml``, or is one of Prometheus's own ``ALERTS`` / ``up``.

Needs the ``prometheus`` binary: skipped without it on a workstation, a failure in CI.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import grafana_builtins, substitute
from stack import (
    Exporter,
    Prometheus,
    demo_exporter,
    family_of,
    metric_names,
    parse_exposition,
    prometheus,
    rules_with_short_for,
    wait_until,
)

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
RULE_DIR = ROOT / "alerting" / "rules"


# The stack scrapes every second; the dashboards must also work for the data source settings of
# common deployments (15 s, Grafana's default, and 60 s), whose longer $__rate_interval is checked too.
SCRAPE_INTERVALS = (1, 15, 60)
BUILTINS = grafana_builtins(1)

# Which value of a template variable the queries are run with when the stack has several; otherwise
# the variable's saved default, else the first value in alphabetical order (Grafana's sort: 1).
PREFERRED = {"feature": "monthly_charges", "metric": "accuracy"}

# Queries that legitimately return nothing against this stack, keyed by query id
# ("<dashboard uid>: <panel title> [<refId>]", "<uid>: annotation <name>", "<uid>: variable <name>"),
# by panel title (every query of the panel) or by the query text after substitution, with the reason.
# Nothing is listed: the exporter creates its counters at 0 for every feature and reason
# (type errors, unknown fields, rejected records, expired labels all return a 0 series), and
# the drift injected from the start fires MlmonFeatureDrift within seconds (``for:`` is shortened),
# so the ALERTS panels have a firing alert to show.
EXPECTED_EMPTY: dict[str, str] = {}

# EXPECTED_EMPTY entries whose emptiness depends on timing: reported, not failed, when they return data.
SOFT_EXPECTED_EMPTY: set[str] = set()

WARM_UP_TIMEOUT = 45.0  # s for the first evaluation with drift, quality and fairness, and a firing alert
QUERY_TIMEOUT = 30.0  # s more for every query to return data (rates need a few scrapes)

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_]\w*)\s*\)$", re.S)


# ------------------------------------------------------------------------------------------------
# Dashboards → queries

def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])  # collapsed rows keep their panels inside


@dataclass(frozen=True)
class Query:
    id: str
    title: str  # panel title, "annotation <name>" or "variable <name>"
    expr: str  # with template variables, as stored in the dashboard
    kind: str  # "panel", "annotation" or "variable"


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    return query.get("query", "") if isinstance(query, dict) else str(query or var.get("definition", ""))


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    uid = dashboard["uid"]
    out = [Query(f"{uid}: variable {v['name']}", f"variable {v['name']}", variable_query(v), "variable")
           for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]
    out += [Query(f"{uid}: annotation {a['name']}", f"annotation {a['name']}", a["expr"], "annotation")
            for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]
    for p in all_panels(dashboard.get("panels", [])):
        for t in p.get("targets") or []:
            if t.get("expr") and not t.get("hide"):
                out.append(Query(f"{uid}: {p['title']} [{t['refId']}]", p["title"], t["expr"], "panel"))
    return out


def label_values(prom: Prometheus, definition: str) -> list[str]:
    """Run ``label_values(selector, label)`` the way Grafana does: label-values API with ``match[]``."""
    m = _LABEL_VALUES.match(definition.strip())
    assert m, f"not a label_values(selector, label) query: {definition!r}"
    r = requests.get(f"{prom.url}/api/v1/label/{m['label']}/values",
                     params={"match[]": m["selector"].strip()}, timeout=10)
    body = r.json()
    assert body.get("status") == "success", f"{definition}: {body.get('error')}"
    return sorted(body["data"])


def resolve_variables(prom: Prometheus, dashboard: dict[str, Any],
                      builtins: dict[str, str] | None = None) -> dict[str, str]:
    """A real value for every template variable, resolved in order (later ones use earlier ones)."""
    values = dict(builtins or BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var.get("type") == "datasource":
            values[name] = "prometheus"
            continue
        if var.get("type") != "query":
            continue
        found = label_values(prom, substitute(variable_query(var), values))
        current = (var.get("current") or {}).get("value")
        if name in PREFERRED and PREFERRED[name] in found:
            values[name] = PREFERRED[name]
        elif isinstance(current, str) and current in found:
            values[name] = current
        elif found:
            values[name] = found[0]
        else:
            values[name] = f"<no value for ${name}>"  # its own query is reported as empty
    return values


def run(prom: Prometheus, query: Query, values: dict[str, str]) -> list[Any]:
    """The query's result: label values for a variable, else the instant vector's samples that are
    numbers (a query that only yields NaN, e.g. 0/0, shows nothing useful either)."""
    expr = substitute(query.expr, values)
    if query.kind == "variable":
        return label_values(prom, expr)
    return [s for s in prom.query(expr) if s["value"][1] not in ("NaN", "+Inf", "-Inf")]


def expected_empty_reason(query: Query, expr: str) -> str | None:
    for key in (query.id, query.title, expr):
        if key in EXPECTED_EMPTY:
            return EXPECTED_EMPTY[key]
    return None


# ------------------------------------------------------------------------------------------------
# Metric names

def recorded_names() -> set[str]:
    names = set()
    for path in sorted(RULE_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8")).get("groups", []):
            names.update(r["record"] for r in group.get("rules", []) if "record" in r)
    return names


def test_metric_name_extraction():
    expr = ('sum by (feature) (rate(mlmon_feature_missing_total{model=~"$model", feature!="x"}[$__rate_interval])) '
            '/ on() group_left sum(rate(mlmon_predictions_total{a="b"}[5m])) > bool 1e-4 '
            'or histogram_quantile(0.99, sum by (le) (rate(mlmon_prediction_latency_seconds_bucket[1m]))) '
            'or time() - max(model:mlmon_x:rate5m offset 5m) or ALERTS{alertname=~"Mlmon.*"} or on() vector(0)')
    assert metric_names(expr) == {"mlmon_feature_missing_total", "mlmon_predictions_total",
                                  "mlmon_prediction_latency_seconds_bucket", "model:mlmon_x:rate5m", "ALERTS"}
    families = {"h": "histogram", "c": "counter", "g_total": "counter", "g_count": "gauge", "s": "summary"}
    assert [family_of(n, families) for n in ("h_bucket", "h_sum", "h", "c_total", "g_total", "g_count",
                                              "s_count", "s_bucket", "x")] == \
        ["h", "h", None, "c", "g_total", "g_count", "s", None, None]


# ------------------------------------------------------------------------------------------------
# The stack

@dataclass
class Stack:
    exporter: Exporter
    prom: Prometheus
    started: float


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards-live")
    started = time.monotonic()
    with demo_exporter(rate=200.0, drift_after=0.0, label_delay=0.5) as exporter, \
            prometheus(tmp, [exporter.target], rules_with_short_for(tmp)) as prom:
        # The first evaluation with drift scores, labelled quality and fairness has been scraped,
        # the recording rules have produced samples, and the injected drift fires an alert.
        warm = ["mlmon_feature_drift_score", 'mlmon_model_quality{metric="accuracy"}', "mlmon_fairness_gap",
                "mlmon_model_quality_estimated", "model_slo:mlmon_slo_burn_rate:ratio_rate1h",
                'ALERTS{alertstate="firing", model="churn"}']
        wait_until(lambda: all(prom.query(q) for q in warm), WARM_UP_TIMEOUT, interval=1.0,
                   what=f"first evaluation, recording rules and a firing alert ({', '.join(warm)})")
        yield Stack(exporter, prom, started)


def test_grafana_builtins_match_grafana():
    assert grafana_builtins(15)["__rate_interval"] == "60s" and grafana_builtins(15)["__interval"] == "15s"
    assert grafana_builtins(60)["__rate_interval"] == "240s"
    # A long range: $__interval grows with it and $__rate_interval follows.
    assert grafana_builtins(15, range_s=7 * 86400)["__interval"] == "605s"
    assert grafana_builtins(15, range_s=7 * 86400)["__rate_interval"] == "620s"


@pytest.mark.parametrize("scrape_interval", SCRAPE_INTERVALS, ids=lambda s: f"scrape{s}s")
def test_every_dashboard_query_returns_data(stack: Stack, scrape_interval: int):
    prom = stack.prom
    queries: list[tuple[Query, str, dict[str, str]]] = []
    for dashboard in load_dashboards().values():
        values = resolve_variables(prom, dashboard, grafana_builtins(scrape_interval))
        queries += [(q, substitute(q.expr, values), values) for q in dashboard_queries(dashboard)]
    assert len(queries) > 50, "expected the four dashboards' queries"

    known = {key for q, expr, _ in queries for key in (q.id, q.title, expr)}
    stale = sorted(set(EXPECTED_EMPTY) - known)
    assert not stale, f"EXPECTED_EMPTY entries that match no dashboard query: {stale}"

    # Rates over $__rate_interval need a few scrapes after a counter first appears: poll until every
    # query that should return data does, or the deadline passes.
    must = [(q, expr, v) for q, expr, v in queries if expected_empty_reason(q, expr) is None]
    deadline = time.monotonic() + QUERY_TIMEOUT
    while True:
        must = [(q, expr, v) for q, expr, v in must if not run(prom, q, v)]  # query errors fail here
        if not must or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    empty = [f"  {q.id}: {expr}" for q, expr, _ in must]
    assert not empty, ("dashboard queries returned no data (fix the query, or add it to EXPECTED_EMPTY with "
                       "the reason):\n" + "\n".join(empty))

    unexpected = []
    for q, expr, v in queries:
        reason = expected_empty_reason(q, expr)
        if reason is None:
            continue
        result = run(prom, q, v)
        if result and not ({q.id, q.title, expr} & SOFT_EXPECTED_EMPTY):
            unexpected.append(f"  {q.id}: {expr}\n    listed as empty ({reason}) but returned {result[:2]}")
        elif result:
            print(f"note: {q.id} is in EXPECTED_EMPTY ({reason}) but returned data this time")
    assert not unexpected, "EXPECTED_EMPTY is out of date:\n" + "\n".join(unexpected)


def test_dashboard_metrics_exist(stack: Stack):
    text = requests.get(f"{stack.exporter.url}/metrics", timeout=10).text
    families, samples = parse_exposition(text)
    recorded = recorded_names()
    used: dict[str, set[str]] = {}
    for dashboard in load_dashboards().values():
        for q in dashboard_queries(dashboard):
            expr = q.expr
            if q.kind == "variable":
                m = _LABEL_VALUES.match(expr.strip())
                assert m, f"{q.id}: not a label_values(selector, label) query: {expr!r}"
                expr = m["selector"]
            for name in metric_names(expr):
                used.setdefault(name, set()).add(q.id)
    assert "mlmon_predictions_total" in used and "mlmon_prediction_latency_seconds_bucket" in used

    problems = []
    for name, where in sorted(used.items()):
        if name in {"ALERTS", "up", "scrape_duration_seconds"} or name in recorded:
            continue
        family = family_of(name, families)
        if family is None and families.get(name) in {"histogram", "summary"}:
            problems.append(f"  {name}: a {families[name]} has no series of that name; use {name}_bucket, "
                            f"_count or _sum (used by {sorted(where)[0]})")
        elif family is None:
            problems.append(f"  {name}: not in the exposition nor a recording rule (used by {sorted(where)[0]})")
        elif name not in samples:
            problems.append(f"  {name}: family {family} ({families[family]}) is exposed but has no {name} "
                            f"series (used by {sorted(where)[0]})")
    assert not problems, "dashboards use metrics the exporter does not expose:\n" + "\n".join(problems)
