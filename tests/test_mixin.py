"""The mixin: one config generates the rules, their promtool unit tests and the dashboards.

* ``python -m mixin --check`` passes on the committed files (CI also runs it from ``.ci/run``).
* Another job selector, grouping labels, URLs and severities: regenerate into a temporary root and
  the generated promtool unit tests pass against the generated rules; the reference fixtures do
  not (so the selector really scopes every rule).
* The PromQL rewrites and the config validation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import require_tool

from mixin import config as mixin_config
from mixin.__main__ import build_all
from mixin.promql import group, scope

ROOT = Path(__file__).resolve().parents[1]


def test_committed_files_match_the_generator():
    res = subprocess.run([sys.executable, "-m", "mixin", "--check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_check_reports_a_stale_file(tmp_path):
    cfg = mixin_config.load()
    for rel, text in build_all(cfg).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    stale = tmp_path / "alerting/rules/mlmon-alerts.yml"
    stale.write_text(stale.read_text(encoding="utf-8").replace("for: 30m", "for: 31m"), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "mixin", "--check", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "alerting/rules/mlmon-alerts.yml" in res.stderr, res.stderr


def _custom_config(tmp_path: Path) -> Path:
    doc = yaml.safe_load(mixin_config.DEFAULT_PATH.read_text(encoding="utf-8"))
    doc.update(job="ml-sidecars", group_labels=["cluster", "namespace"], grafana_url="https://grafana.internal",
               runbook_url="https://wiki.internal/mlmon-runbooks", severities={"page": "P1", "ticket": "P3"})
    path = tmp_path / "mixin.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.tools
def test_another_job_selector_regenerates_and_promtool_tests_pass(tmp_path):
    promtool = require_tool("promtool")
    out = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "mixin", "--config", str(_custom_config(tmp_path)), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rules = (out / "alerting/rules/mlmon-alerts.yml").read_text(encoding="utf-8")
    recording = (out / "alerting/rules/mlmon-recording.yml").read_text(encoding="utf-8")
    assert 'up{job="ml-sidecars"} == 0' in rules and 'job="mlmon"' not in rules + recording
    assert "sum by (cluster, namespace, job, model) (rate(mlmon_predictions_total{job=\"ml-sidecars\"}[5m]))" \
        in recording
    assert "severity: P1" in rules and "severity: critical" not in rules
    assert "https://grafana.internal/d/mlmon-quality?" in rules and "https://wiki.internal/mlmon-runbooks#" in rules
    service = json.loads((out / "grafana/dashboards/service.json").read_text(encoding="utf-8"))
    variables = [v["name"] for v in service["templating"]["list"]]
    assert variables[:5] == ["datasource", "cluster", "namespace", "job", "instance"]
    job_var = next(v for v in service["templating"]["list"] if v["name"] == "job")
    assert job_var["current"]["value"] == "ml-sidecars"

    tests = sorted((out / "alerting/tests").glob("*.yml"))
    assert len(tests) >= 7
    res = subprocess.run([promtool, "test", "rules", *map(str, tests)], cwd=out / "alerting/tests",
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]

    # The committed fixtures (job="mlmon") against these rules fail: the selector scopes the rules.
    reference = out / "alerting/tests/reference-exporter.test.yml"
    reference.write_text((ROOT / "alerting/tests/exporter.test.yml").read_text(encoding="utf-8"), encoding="utf-8")
    res = subprocess.run([promtool, "test", "rules", str(reference)], cwd=out / "alerting/tests",
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0


def test_scope_adds_matchers_to_raw_and_recorded_series_only():
    sel = 'job=~"$job", instance=~"$instance"'
    expr = ('sum by (job) (rate(mlmon_x_total{a="b"}[5m])) / on (job) model:mlmon_y:rate5m '
            'and instance_model:mlmon_z:max and up and ALERTS{alertname="Mlmon.*"} '
            'and label_replace(mlmon_q, "l", "mlmon_v", "", "")')
    assert scope(expr, sel, sel) == (
        'sum by (job) (rate(mlmon_x_total{job=~"$job", instance=~"$instance", a="b"}[5m])) '
        '/ on (job) model:mlmon_y:rate5m{job=~"$job"} '
        'and instance_model:mlmon_z:max{job=~"$job", instance=~"$instance"} '
        'and up{job=~"$job", instance=~"$instance"} and ALERTS{job=~"$job", alertname="Mlmon.*"} '
        'and label_replace(mlmon_q{job=~"$job", instance=~"$instance"}, "l", "mlmon_v", "", "")')
    assert scope("rate(mlmon_a_total[5m])", 'job="j"') == 'rate(mlmon_a_total{job="j"}[5m])'


def test_group_adds_labels_to_job_groupings():
    assert group("sum by (job, model) (x) / on (job, model) group_left () y", ("cluster",)) == \
        "sum by (cluster, job, model) (x) / on (cluster, job, model) group_left () y"
    assert group("sum by (job) (x)", ()) == "sum by (job) (x)"


@pytest.mark.parametrize("change, message", [
    ({"job": 'ml"x'}, "job:"),
    ({"group_labels": ["instance"]}, "group_labels:"),
    ({"group_labels": ["bad-label"]}, "group_labels:"),
    ({"severities": {"page": "critical"}}, "severities.ticket:"),
    ({"slo": {"period": "30d", "burn_rates": [{"long": "5m", "short": "1h", "factor": 2, "action": "page"}],
              "for": {"page": "2m"}}}, "slo.burn_rates[0].short:"),
    ({"slo": {"period": "30d", "burn_rates": [{"long": "1h", "short": "5m", "factor": 2, "action": "wake"}],
              "for": {"page": "2m"}}}, "slo.burn_rates[0].action:"),
    ({"serving_min_share": 2}, "serving_min_share:"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_config_errors_name_the_key(change, message):
    doc = yaml.safe_load(mixin_config.DEFAULT_PATH.read_text(encoding="utf-8"))
    doc.update(change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mixin_config.parse(doc)


def test_slo_rules_follow_the_policy():
    doc = yaml.safe_load(mixin_config.DEFAULT_PATH.read_text(encoding="utf-8"))
    doc["slo"] = {"period": "28d", "for": {"page": "1m"},
                  "burn_rates": [{"long": "2h", "short": "10m", "factor": 10, "action": "page"}]}
    files = build_all(mixin_config.parse(doc))
    recording = yaml.safe_load(files["alerting/rules/mlmon-recording.yml"])
    names = {r["record"] for g in recording["groups"] for r in g["rules"]}
    for w in ("5m", "10m", "2h", "28d"):
        assert f"model_slo:mlmon_slo_burn_rate:ratio_rate{w}" in names
    assert "model_slo:mlmon_slo_burn_rate:ratio_rate1h" not in names
    alerts = yaml.safe_load(files["alerting/rules/mlmon-alerts.yml"])
    burn = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "MlmonSLOErrorBudgetBurn"]
    assert len(burn) == 1 and burn[0]["for"] == "1m" and "ratio_rate10m > 10" in burn[0]["expr"]
    service = json.loads(files["grafana/dashboards/service.json"])
    panel = next(p for p in service["panels"] if p["title"] == "Burn rate now, per window")
    assert [t["expr"].split("ratio_rate")[1].split("{")[0] for t in panel["targets"]] == ["5m", "10m", "2h"]
