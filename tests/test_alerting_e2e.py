"""The shipped alerting bundle end to end: exporter → Prometheus → Alertmanager → receivers.

One stack for the module, every process on 127.0.0.1, started here and stopped by PID (tests/stack.py):

* the exporter fed by the demo churn model through the real HTTP API, with drift injected from the
  start (monthly_charges, support_calls, contract shift; concept drift) and latencies multiplied
  by 20, so ~99 % of the predictions break the demo's 100 ms latency SLO (objective 99 %);
* a real Prometheus scraping it every second with copies of the shipped rules whose ``for:`` is
  shortened to 5 s and whose group intervals are the test's 1 s (so the 5-minute fleet-PSI group
  is evaluated too); nothing else in the rules is changed;
* a real Alertmanager with a copy of ``alerting/alertmanager.yml`` in which ONLY two things
  change: the placeholder receiver URLs ``http://127.0.0.1:9095/{pager,ticket,retraining}`` point
  at the test's webhook sink (same paths, so each path identifies its receiver), and the
  ``group_wait`` / ``group_interval`` values are shortened. Routes, matchers, ``continue``,
  grouping, repeat intervals, ``send_resolved`` and the inhibit rules are the shipped ones
  (``test_alertmanager_copy_changes_only_urls_and_timings`` checks this);
* the webhook sink, standing in for the pager, the ticket system and the retraining pipeline.

What is checked:

1. a drift alert reaches the ticket and the retraining receivers, the latency SLO burn pages, with
   the labels and annotations of the contract;
2. an inhibited alert reaches no receiver: the slow-burn (warning) ``MlmonSLOErrorBudgetBurn`` of
   the latency SLO, inhibited by the fast-burn (critical) one of the same model and SLO — and, with
   a synthetic ``MlmonExporterDown`` pushed into Alertmanager, the per-replica alerts of that
   instance;
3. every metric the rules read is in the exporter's live exposition or recorded by a rule;
4. Prometheus evaluates every loaded rule without error.

Needs ``prometheus`` and ``prometheus-alertmanager``: skipped without them on a workstation, a failure
in CI. Takes about 30-40 s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import read_samples
from stack import (
    ROOT,
    Alertmanager,
    Exporter,
    Prometheus,
    Webhook,
    alertmanager,
    demo_exporter,
    family_of,
    metric_names,
    parse_exposition,
    prometheus,
    rules_with_short_for,
    wait_until,
    webhook,
)

pytestmark = pytest.mark.tools

ALERTMANAGER_CONFIG = ROOT / "alerting" / "alertmanager.yml"
RULE_DIR = ROOT / "alerting" / "rules"
PLACEHOLDER_BASE = "http://127.0.0.1:9095"
RUNBOOK_BASE = "https://github.com/mlmon/mlmon/blob/main/docs/runbooks.md#"
GRAFANA_BASE = "http://grafana.example.com"

# Shortened Alertmanager timings (shipped: group_wait 30s / 5m, group_interval 5m). Every route gets
# the same group_wait, so a warning and the critical alert that inhibits it, sent by Prometheus in
# the same rule evaluation, are both in Alertmanager before either group is flushed.
GROUP_WAIT = "3s"
GROUP_INTERVAL = "2s"
QUIET_PERIOD = 3 + 2 * 2 + 3  # s: group_wait + two group_intervals + slack, for "was never notified"

WAIT = 90.0  # s: bound of every wait for the stack (2 cores, other tests may be running)
RATE = 200.0  # predictions/s
LATENCY_SCALE = 20.0  # demo latencies ~ lognormal(median 20 ms) × 20: ~99 % above the 100 ms threshold
DRIFTED = {"monthly_charges", "support_calls"}  # numeric features the demo's DriftPlan shifts
ALWAYS_THERE = {"up", "ALERTS", "ALERTS_FOR_STATE"}  # series Prometheus makes itself


# ------------------------------------------------------------------------------------------------
# Config copies


def alertmanager_config_copy(sink_url: str) -> str:
    """The shipped Alertmanager config as text, with the placeholder URLs pointing at the sink and
    group_wait / group_interval shortened. Text substitution keeps everything else byte for byte."""
    text = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    assert text.count(PLACEHOLDER_BASE + "/") >= 3, "expected the three placeholder receiver URLs"
    text = re.sub(re.escape(PLACEHOLDER_BASE) + r"(?=/(?:pager|ticket|retraining)\b)", sink_url, text)
    text = re.sub(r"(?m)^(\s*group_wait:\s*)\S+", rf"\g<1>{GROUP_WAIT}", text)
    return re.sub(r"(?m)^(\s*group_interval:\s*)\S+", rf"\g<1>{GROUP_INTERVAL}", text)


def _without_urls_and_timings(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("<url>" if k == "url" else _without_urls_and_timings(v))
                for k, v in node.items() if k not in {"group_wait", "group_interval"}}
    if isinstance(node, list):
        return [_without_urls_and_timings(v) for v in node]
    return node


def rule_copies(tmp: Path) -> list[Path]:
    """The harness's copies (every ``for:`` 5 s) with every group evaluated at Prometheus's 1 s."""
    paths = rules_with_short_for(tmp)
    for path in paths:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            group.pop("interval", None)  # mlmon.drift.fleet.rules: 5m, would stay unevaluated
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------------
# Metric names in PromQL (no PromQL parser in Python: strip what is not a metric name)

# PromQL inside annotation templates: query (printf `...` ...) — format verbs sit in label matchers.
_TEMPLATE_QUERY = re.compile(r"query\s*\(\s*printf\s*`([^`]*)`")


def rules() -> list[dict[str, Any]]:
    return [r for path in sorted(RULE_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for r in group["rules"]]





def test_metric_name_extraction():
    expr = ('sum by (job, model) (rate(mlmon_feature_missing_total{feature!="x", a=~"b|c"}[30m])) '
            '/ on (job) group_left () (sum(rate(mlmon_predictions_total[5m])) > 0) > bool 1e-4 '
            'or histogram_quantile(0.99, sum by (le) (rate(mlmon_prediction_latency_seconds_bucket[5m]))) '
            'or time() - max(model:mlmon_x:rate5m offset 5m) or absent(up{job="mlmon"}) '
            'unless avg_over_time(mlmon_g[1d:5m]) * 3600 >= 0 * clamp_min(ALERTS, 1e-4) + 900')
    assert metric_names(expr) == {"mlmon_feature_missing_total", "mlmon_predictions_total",
                                  "mlmon_prediction_latency_seconds_bucket", "model:mlmon_x:rate5m", "up",
                                  "mlmon_g", "ALERTS"}
    assert _TEMPLATE_QUERY.findall('{{ with query (printf `max(m_x{%s,method=%q})` $sel $m) }}') == \
        ["max(m_x{%s,method=%q})"]
    families = {"h": "histogram", "c": "counter", "g": "gauge", "s": "summary"}
    assert [family_of(n, families) for n in ("h_bucket", "h_sum", "h_count", "h", "c_total", "c", "g",
                                              "g_total", "s_count", "s_bucket", "x")] == \
        ["h", "h", "h", None, "c", "c", "g", None, "s", None, None]


def test_alertmanager_copy_changes_only_urls_and_timings():
    shipped = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    copy = yaml.safe_load(alertmanager_config_copy("http://127.0.0.1:1"))
    assert _without_urls_and_timings(copy) == _without_urls_and_timings(shipped)
    urls = {r["name"]: [w["url"] for w in r["webhook_configs"]] for r in copy["receivers"]}
    assert urls == {"mlmon-pager": ["http://127.0.0.1:1/pager"], "mlmon-ticket": ["http://127.0.0.1:1/ticket"],
                    "mlmon-retraining": ["http://127.0.0.1:1/retraining"]}


# ------------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    exporter: Exporter
    prom: Prometheus
    am: Alertmanager
    hook: Webhook

    def am_alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (active, inhibited or silenced) whose labels include ``labels``."""
        alerts = requests.get(f"{self.am.url}/api/v2/alerts", timeout=10).json()
        return [a for a in alerts if labels.items() <= a["labels"].items()]

    def delivered(self, path: str, **labels: str) -> list[dict[str, Any]]:
        """Alerts the webhook received on ``path`` whose labels include ``labels``."""
        return [a for a in self.hook.alerts(path) if labels.items() <= a["labels"].items()]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.hook.received) if p == path]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerting-e2e")
    with webhook() as hook:
        config = tmp / "alertmanager.yml"
        config.write_text(alertmanager_config_copy(hook.url), encoding="utf-8")
        # Exit order: Prometheus first (no scrape or alert push in flight), then Alertmanager, exporter, sink.
        with demo_exporter(rate=RATE, drift_after=0.0, label_delay=0.5, latency_scale=LATENCY_SCALE) as exporter, \
                alertmanager(tmp, config) as am, \
                prometheus(tmp, [exporter.target], rule_copies(tmp), alertmanager=am.target) as prom:
            # An evaluation with drift, joined labels (quality) and fairness has been scraped.
            warm = ["mlmon_feature_drift_score", 'mlmon_model_quality{metric="accuracy"}', "mlmon_fairness_gap",
                    "model_slo:mlmon_slo_burn_rate:ratio_rate5m"]
            wait_until(lambda: all(prom.query(q) for q in warm), WAIT, interval=1.0,
                       what=f"first evaluation and recording rules ({', '.join(warm)})")
            yield Stack(exporter, prom, am, hook)


@contextmanager
def diagnostics(stack: Stack) -> Iterator[None]:
    """On failure, print what each component saw (pytest shows it under "Captured stdout call")."""
    try:
        yield
    except BaseException:
        print("=== webhook received ===")
        for path, body in list(stack.hook.received):
            print(path, body.get("receiver"), [(a["labels"].get("alertname"), a["labels"].get("severity"),
                                               a["labels"].get("slo") or a["labels"].get("feature"), a["status"])
                                              for a in body.get("alerts", [])])
        for name, fetch in (("Alertmanager alerts", lambda: stack.am_alerts()),
                            ("Prometheus alerts", stack.prom.alerts)):
            try:
                print(f"=== {name} ===")
                for a in fetch():
                    print(json.dumps({"labels": a["labels"], "state": a.get("state") or a.get("status")}))
            except (requests.RequestException, ValueError) as exc:
                print(f"unavailable: {exc}")
        print("=== Prometheus log ===\n" + stack.prom.process.output())
        print("=== Alertmanager log ===\n" + stack.am.process.output())
        raise


def _only(alerts: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert alerts, f"no {what}"
    return alerts[0]


# ------------------------------------------------------------------------------------------------
# 1. Alerts reach the right receivers with the contract's labels and annotations


def test_drift_alert_reaches_ticket_and_retraining(stack: Stack):
    with diagnostics(stack):
        def drift(path: str) -> list[dict[str, Any]]:
            return [a for a in stack.delivered(path, alertname="MlmonFeatureDrift")
                    if a["labels"].get("feature") in DRIFTED and a["status"] == "firing"]

        # The retraining route matches the drift/quality alerts and continues to the severity route.
        for path, receiver in (("/ticket", "mlmon-ticket"), ("/retraining", "mlmon-retraining")):
            wait_until(lambda p=path: drift(p), WAIT, what=f"MlmonFeatureDrift of {sorted(DRIFTED)} at {path}")
            bodies = [b for b in stack.bodies(path) if b["groupLabels"].get("alertname") == "MlmonFeatureDrift"]
            assert {b["receiver"] for b in bodies} == {receiver}
            # Grouped by alertname and model, as the shipped route says.
            assert all(b["groupLabels"] == {"alertname": "MlmonFeatureDrift", "model": "churn"} for b in bodies)

            for alert in drift(path):
                labels, ann = alert["labels"], alert["annotations"]
                feature = labels["feature"]
                # A fleet alert: one per model and feature over every replica, so no instance label.
                assert labels == {"alertname": "MlmonFeatureDrift", "job": "mlmon", "model": "churn",
                                  "feature": feature, "severity": "warning"}, labels
                assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, ann
                assert ann["summary"] == "An input feature has drifted from its training baseline."
                desc = ann["description"]
                assert f"Feature {feature} of model churn has drifted across every replica of job mlmon" in desc, desc
                # The alert's value (statistic over threshold) ...
                ratio = re.search(r"the chi-square of their traffic together is ([\d.e+-]+) times its threshold", desc)
                assert ratio and float(ratio.group(1)) > 1, desc
                # ... and the fleet statistic of the last hour against its threshold, on real records.
                stat = re.search(r"Last hour: chi-square ([\d.e+-]+) \(threshold ([\d.e+-]+)\) on (\d+) records", desc)
                assert stat and float(stat.group(1)) > float(stat.group(2)) > 0 and int(stat.group(3)) > 0, desc
                # The only replica flags it too.
                assert f"Flagged on its own by {stack.exporter.target}." in desc, desc
                assert "{{" not in desc and "<no value>" not in desc and "n/a" not in desc.split("last 5")[0], desc
                assert ann["runbook_url"] == RUNBOOK_BASE + "mlmonfeaturedrift"
                assert ann["dashboard_url"] == f"{GRAFANA_BASE}/d/mlmon-drift?var-model=churn&var-feature={feature}"

        # A warning pages nobody.
        assert not stack.delivered("/pager", alertname="MlmonFeatureDrift")


def test_latency_slo_burn_pages(stack: Stack):
    with diagnostics(stack):
        def page() -> list[dict[str, Any]]:
            return [a for a in stack.delivered("/pager", alertname="MlmonSLOErrorBudgetBurn", severity="critical")
                    if a["status"] == "firing"]

        wait_until(page, WAIT, what="critical MlmonSLOErrorBudgetBurn at /pager")
        alert = _only([a for a in page() if a["labels"].get("slo") == "latency"], "latency SLO page")
        labels, ann = alert["labels"], alert["annotations"]
        # Fleet-wide (counter-based): summed across replicas, so no instance label.
        assert labels == {"alertname": "MlmonSLOErrorBudgetBurn", "job": "mlmon", "model": "churn",
                          "slo": "latency", "severity": "critical"}, labels
        assert {b["receiver"] for b in stack.bodies("/pager")} == {"mlmon-pager"}
        assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, ann
        assert ann["summary"] == "A model is burning its SLO error budget fast."
        desc = ann["description"]
        assert "Model churn is burning the error budget of SLO latency" in desc, desc
        burn = re.search(r"at ([\d.]+)x the sustainable rate \(threshold 14\.4x over 1h and 5m", desc)
        # ~99 % bad events against a 1 % budget: a burn rate near 99.
        assert burn and float(burn.group(1)) > 14.4, desc
        assert "objective 99%" in desc, desc
        assert re.search(r"error budget (is spent|is left)", desc), desc
        assert "Predictions slower than 100ms count as bad" in desc, desc
        assert "{{" not in desc and "<no value>" not in desc, desc
        assert ann["runbook_url"] == RUNBOOK_BASE + "mlmonsloerrorbudgetburn"
        assert ann["dashboard_url"] == f"{GRAFANA_BASE}/d/mlmon-service?var-model=churn"
        # A page is not also a ticket, and never goes to the retraining pipeline.
        assert not stack.delivered("/ticket", alertname="MlmonSLOErrorBudgetBurn", severity="critical")
        assert not stack.delivered("/retraining", alertname="MlmonSLOErrorBudgetBurn")


# ------------------------------------------------------------------------------------------------
# 2. Inhibitions


def test_critical_burn_inhibits_warning_burn(stack: Stack):
    """Critical silences the warning of the same alertname, job, model and slo (third inhibit rule).

    The stack really produces this pair: the burn-rate windows (5m … 3d) only hold the few seconds of
    data the test has, so the slow-burn (warning) conditions — burn > 3 over "1d" and "2h", > 1 over
    "3d" and "6h" — hold as soon as the fast-burn (critical) ones do, and with every ``for:`` at 5 s
    both fire in the same rule evaluation. In production the warning's ``for: 15m`` (against the
    critical's 2m) gives the same order: the page comes first and the ticket is suppressed.
    """
    warning = {"alertname": "MlmonSLOErrorBudgetBurn", "severity": "warning", "model": "churn", "slo": "latency"}
    with diagnostics(stack):
        # Prometheus fires both variants of the latency burn.
        def firing(severity: str) -> list[dict[str, Any]]:
            return [a for a in stack.prom.alerts() if a["state"] == "firing"
                    and a["labels"].get("alertname") == "MlmonSLOErrorBudgetBurn"
                    and a["labels"].get("slo") == "latency" and a["labels"].get("severity") == severity]

        wait_until(lambda: firing("critical") and firing("warning"), WAIT,
                   what="critical and warning latency MlmonSLOErrorBudgetBurn firing in Prometheus")

        # Alertmanager holds the warning, suppressed, inhibited by the critical one.
        held = wait_until(lambda: stack.am_alerts(**warning), WAIT, what="warning latency burn in Alertmanager")
        seen = time.monotonic()
        critical = _only(stack.am_alerts(**{**warning, "severity": "critical"}), "critical latency burn in AM")
        assert critical["status"]["state"] == "active" and not critical["status"]["inhibitedBy"], critical
        alert = _only(held, "warning latency burn")
        assert alert["status"]["state"] == "suppressed", alert
        assert alert["status"]["inhibitedBy"] == [critical["fingerprint"]], (alert, critical["fingerprint"])

        # Long enough for a group_wait and two group_intervals: an uninhibited warning would be at /ticket.
        time.sleep(max(0.0, seen + QUIET_PERIOD - time.monotonic()))
        for path in ("/pager", "/ticket", "/retraining"):
            assert not stack.delivered(path, **warning), f"inhibited warning burn delivered to {path}"
        alert = _only(stack.am_alerts(**warning), "warning latency burn after the quiet period")
        assert alert["status"]["inhibitedBy"] == [critical["fingerprint"]], alert
        # ... while the critical one did page (inhibition is by severity, not a lost alert).
        assert stack.delivered("/pager", **{**warning, "severity": "critical"})


def test_exporter_down_does_not_hide_fleet_alerts(stack: Stack):
    """First inhibit rule: ``MlmonExporterDown`` silences the other alerts of the same job and instance,
    and only those: fleet-wide alerts (drift over the union of the replicas, SLO burns) carry no
    instance label, so one replica down must not hide them.

    A real ``MlmonExporterDown`` cannot coexist with this replica's series here: a failed scrape
    marks them stale at once. So the alert ``up{job="mlmon"} == 0`` would produce (labels alertname,
    job, instance, severity) is pushed into Alertmanager's API, naming the real exporter's instance.
    Silencing per-replica alerts is checked against a live Alertmanager in test_alerting_rules. Runs
    last: it pages.
    """
    drift = {"alertname": "MlmonFeatureDrift", "model": "churn"}
    with diagnostics(stack):
        wait_until(lambda: stack.am_alerts(**drift), WAIT, what="MlmonFeatureDrift in Alertmanager")
        down = {"alertname": "MlmonExporterDown", "severity": "critical", "job": "mlmon",
                "instance": stack.exporter.target}
        r = requests.post(f"{stack.am.url}/api/v2/alerts", json=[{"labels": down}], timeout=10)
        assert r.ok, r.text
        _only(wait_until(lambda: stack.am_alerts(**down), WAIT, what="synthetic MlmonExporterDown"),
              "MlmonExporterDown")
        time.sleep(2)  # Alertmanager recomputes inhibitions as alerts arrive
        for alert in stack.am_alerts(**drift):
            assert "instance" not in alert["labels"], alert["labels"]
            assert not alert["status"]["inhibitedBy"], alert
        page = _only(stack.am_alerts(alertname="MlmonSLOErrorBudgetBurn", severity="critical", slo="latency"),
                     "critical latency burn in Alertmanager")
        assert not page["status"]["inhibitedBy"], page


# ------------------------------------------------------------------------------------------------
# 3. The rules read metrics that exist


def test_rule_metrics_exist_in_the_exposition(stack: Stack):
    with diagnostics(stack):
        text = requests.get(f"{stack.exporter.url}/metrics", timeout=10).text
        families, samples = parse_exposition(text)
        # Labels have flowed and an evaluation has run: quality, label delay and drift are exposed.
        assert {"mlmon_model_quality", "mlmon_label_delay_seconds_bucket", "mlmon_feature_drift_score"} <= samples

        recorded = {r["record"] for r in rules() if "record" in r}
        used: dict[str, set[str]] = {}
        for rule in rules():
            name = rule.get("alert") or rule["record"]
            for metric in metric_names(rule["expr"]):
                used.setdefault(metric, set()).add(name)
            # PromQL the annotations run (query ...) must not read missing series either.
            for ann in rule.get("annotations", {}).values():
                for query in _TEMPLATE_QUERY.findall(ann):
                    for metric in metric_names(query):
                        used.setdefault(metric, set()).add(f"{name} (annotation)")
        # The extraction found the rules' metrics, not nothing.
        assert {"mlmon_slo_events_total", "mlmon_prediction_latency_seconds_bucket", "mlmon_feature_drift_detected",
                "model_slo:mlmon_slo_burn_rate:ratio_rate1h", "up"} <= used.keys(), sorted(used)
        assert len(used) > 40, sorted(used)

        problems = []
        for metric, where in sorted(used.items()):
            if metric in ALWAYS_THERE or metric in recorded:
                continue
            family = family_of(metric, families)
            if family is None and families.get(metric) in {"histogram", "summary"}:
                problems.append(f"  {metric}: a {families[metric]} has no series of that name "
                                f"(use _bucket, _sum or _count); used by {sorted(where)}")
            elif family is None:
                problems.append(f"  {metric}: neither in the exposition nor recorded by a rule; "
                                f"used by {sorted(where)}")
            elif metric not in samples:
                problems.append(f"  {metric}: family {family} is exposed without {metric} samples; "
                                f"used by {sorted(where)}")
        assert not problems, "rules read metrics the exporter does not expose:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# 4. Every rule evaluates without error


def _rules_api(prom: Prometheus) -> list[dict[str, Any]]:
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    return [{**r, "group": g["name"]} for g in groups for r in g["rules"]]


def test_every_rule_is_healthy(stack: Stack):
    """Parsing is promtool's job; this catches PromQL that fails at run time (e.g. many-to-many
    matching) on real exporter data."""
    with diagnostics(stack):
        loaded = _rules_api(stack.prom)
        assert len(loaded) == len(rules()), "Prometheus did not load every rule"
        # Every group runs every second in this stack (the fleet-PSI group's 5m interval is dropped in
        # the copies): wait until every rule has been evaluated at least once, then for two more rounds.
        wait_until(lambda: all(r["health"] != "unknown" for r in _rules_api(stack.prom)), WAIT,
                   what="every rule evaluated")
        time.sleep(2.5)
        loaded = _rules_api(stack.prom)
        bad = [f"  {r['group']}/{r['name']}: health={r['health']} {r.get('lastError', '')}"
               for r in loaded if r["health"] != "ok"]
        assert not bad, "rules failing in Prometheus:\n" + "\n".join(bad)

        # The health above is the last evaluation's; Prometheus's own counter covers every evaluation
        # since start, so an error that comes and goes with the data is caught too.
        own = requests.get(f"{stack.prom.url}/metrics", timeout=10).text
        failures = {labels["rule_group"]: value for name, labels, value in read_samples(own)
                    if name == "prometheus_rule_evaluation_failures_total"}
        assert failures, "prometheus_rule_evaluation_failures_total not found"
        assert not {g: n for g, n in failures.items() if n}, f"rule evaluation failures: {failures}"
