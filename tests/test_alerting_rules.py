"""Checks of the shipped Prometheus rules and Alertmanager config (alerting/).

Two kinds of tests:

* ``@pytest.mark.tools``: run the real tools (``promtool check rules`` / ``test rules``,
  ``amtool check-config`` / ``config routes test``, a live ``prometheus-alertmanager`` for the
  inhibitions). Without the binary they skip locally; with ``CI`` set (``CI=true``) a missing
  binary is a failure, so CI can never go green by skipping them.
* Plain YAML checks: every alert has the labels and annotations of the contract, a runbook
  section, a firing and a silent unit test; recording rules follow ``level:metric:operations``;
  raw metrics the rules read are in the metric contract.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import require_tool

from exporter.contract import BY_NAME, series_names

ROOT = Path(__file__).resolve().parents[1]
ALERTING = ROOT / "alerting"
RULE_FILES = sorted((ALERTING / "rules").glob("*.yml"))
TEST_FILES = sorted((ALERTING / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ALERTING / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

RUNBOOK_BASE = "https://github.com/mlmon/mlmon/blob/main/docs/runbooks.md#"
GRAFANA_BASE = "http://grafana.example.com"
DASHBOARD_UIDS = {"mlmon-overview", "mlmon-service", "mlmon-drift", "mlmon-quality"}
SEVERITIES = {"critical", "warning"}
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
PENDING_CONTRACT_METRICS: set[str] = set()  # raw metrics the rules read before the exporter has them
TOOL_TIMEOUT = 300


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=ROOT, **kw)


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def alert_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def recording_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            rules.extend(r for r in group["rules"] if "record" in r)
    return rules


def rule_groups() -> list[str]:
    return [g["name"] for path in RULE_FILES for g in load_yaml(path)["groups"]]


def alert_names() -> list[str]:
    return sorted({r["alert"] for r in alert_rules()})


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOKS.read_text(encoding="utf-8")
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_rule_and_test_files_exist():
    assert [p.name for p in RULE_FILES] == ["mlmon-alerts.yml", "mlmon-recording.yml"]
    assert TEST_FILES, "no promtool unit tests in alerting/tests"
    assert alert_names(), "no alert rules"


# --- real tools -------------------------------------------------------------------------------


@pytest.mark.tools
@pytest.mark.parametrize("path", [*RULE_FILES, *sorted((ROOT / "alerting" / "optional").glob("*.yml"))],
                         ids=lambda p: p.name)
def test_promtool_check_rules(path):
    promtool = require_tool("promtool")
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.tools
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path):
    promtool = require_tool("promtool")
    res = run([promtool, "test", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.tools
def test_amtool_check_config():
    amtool = require_tool("amtool")
    res = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


ROUTING_CASES = [
    # (labels, receivers in routing-tree order)
    (
        {"alertname": "MlmonSLOErrorBudgetBurn", "severity": "critical", "model": "churn", "slo": "latency"},
        ["mlmon-pager"],
    ),
    (
        {"alertname": "MlmonExporterDown", "severity": "critical", "job": "mlmon", "instance": "10.0.0.1:8000"},
        ["mlmon-pager"],
    ),
    (
        {"alertname": "MlmonSLOErrorBudgetBurn", "severity": "warning", "model": "churn", "slo": "availability"},
        ["mlmon-ticket"],
    ),
    ({"alertname": "MlmonLabelsStale", "severity": "warning", "model": "churn"}, ["mlmon-ticket"]),
    (
        {"alertname": "MlmonFeatureDrift", "severity": "warning", "model": "churn", "feature": "age"},
        ["mlmon-retraining", "mlmon-ticket"],
    ),
    (
        {"alertname": "MlmonPredictionDrift", "severity": "warning", "model": "churn", "feature": "__prediction__"},
        ["mlmon-retraining", "mlmon-ticket"],
    ),
    (
        {"alertname": "MlmonModelQualityDegraded", "severity": "warning", "model": "churn", "metric": "accuracy"},
        ["mlmon-retraining", "mlmon-ticket"],
    ),
    # No severity: still reaches a human through the root route.
    ({"alertname": "MlmonSomethingNew", "model": "churn"}, ["mlmon-ticket"]),
]


@pytest.mark.tools
@pytest.mark.parametrize(
    "labels,receivers",
    ROUTING_CASES,
    ids=[f"{c[0]['alertname']}-{c[0].get('severity', 'none')}" for c in ROUTING_CASES],
)
def test_amtool_routes(labels, receivers):
    amtool = require_tool("amtool")
    args = [
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={','.join(receivers)}",
        *(f"{k}={v}" for k, v in labels.items()),
    ]
    res = run(args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[0] == ",".join(receivers)


def test_every_severity_has_a_route():
    route = load_yaml(ALERTMANAGER_CONFIG)["route"]
    assert route["group_by"] == ["alertname", "model"]
    routed = {
        m.split("=", 1)[1].strip('"')
        for r in route["routes"]
        for m in r.get("matchers", [])
        if m.startswith("severity=")
    }
    assert routed == SEVERITIES


def test_webhook_urls_are_marked_placeholders():
    """The end-to-end test rewrites these URLs in a copy; users must see they are placeholders."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert len(urls) == 3
    assert all(u.startswith("http://127.0.0.1:9095/") for u in urls), urls
    lines = [ln for ln in ALERTMANAGER_CONFIG.read_text(encoding="utf-8").splitlines() if re.match(r"\s*-?\s*url:", ln)]
    assert lines and all("# PLACEHOLDER" in ln for ln in lines), lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read()


INHIBITION_ALERTS = [
    # (labels, expected to be inhibited)
    ({"alertname": "MlmonExporterDown", "severity": "critical", "job": "mlmon", "instance": "a:8000"}, False),
    # Per-replica alert of the down instance: inhibited; same alert on a healthy replica: not.
    (
        {
            "alertname": "MlmonModelQualityDegraded",
            "severity": "warning",
            "job": "mlmon",
            "instance": "a:8000",
            "model": "churn",
            "metric": "accuracy",
        },
        True,
    ),
    (
        {
            "alertname": "MlmonModelQualityDegraded",
            "severity": "warning",
            "job": "mlmon",
            "instance": "b:8000",
            "model": "churn",
            "metric": "accuracy",
        },
        False,
    ),
    # Fleet-wide drift (no instance label) is never hidden by one replica being down either.
    (
        {"alertname": "MlmonFeatureDrift", "severity": "warning", "job": "mlmon", "model": "churn", "feature": "age"},
        False,
    ),
    # A fleet-wide SLO page is never hidden by one replica being down.
    (
        {
            "alertname": "MlmonSLOErrorBudgetBurn",
            "severity": "critical",
            "job": "mlmon",
            "model": "churn",
            "slo": "latency",
        },
        False,
    ),
    # Critical silences the warning of the same alert, model and SLO, not of another SLO.
    (
        {
            "alertname": "MlmonSLOErrorBudgetBurn",
            "severity": "warning",
            "job": "mlmon",
            "model": "churn",
            "slo": "latency",
        },
        True,
    ),
    (
        {
            "alertname": "MlmonSLOErrorBudgetBurn",
            "severity": "warning",
            "job": "mlmon",
            "model": "churn",
            "slo": "availability",
        },
        False,
    ),
    # No traffic on fraud: its drift and quality alerts are consequences.
    ({"alertname": "MlmonNoTraffic", "severity": "warning", "job": "mlmon", "model": "fraud"}, False),
    (
        {
            "alertname": "MlmonPredictionDrift",
            "severity": "warning",
            "job": "mlmon",
            "instance": "b:8000",
            "model": "fraud",
            "feature": "__prediction__",
        },
        True,
    ),
    (
        {
            "alertname": "MlmonModelQualityDegraded",
            "severity": "warning",
            "job": "mlmon",
            "instance": "b:8000",
            "model": "fraud",
            "version": "v1",
            "metric": "accuracy",
        },
        True,
    ),
    (
        {
            "alertname": "MlmonDataFreshness",
            "severity": "warning",
            "job": "mlmon",
            "instance": "b:8000",
            "model": "fraud",
        },
        True,
    ),
    # ... but not the drift of another model.
    (
        {
            "alertname": "MlmonModelQualityDegraded",
            "severity": "warning",
            "job": "mlmon",
            "instance": "b:8000",
            "model": "churn",
            "version": "v1",
            "metric": "accuracy",
        },
        False,
    ),
]


@pytest.mark.tools
def test_alertmanager_inhibitions_live():
    """Start Alertmanager on 127.0.0.1 with the shipped config, post alerts, read their status."""
    binary = require_tool("prometheus-alertmanager")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "alertmanager.log", "w+")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--storage.path={tmp}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    _http(f"{base}/-/ready")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"alertmanager did not start:\n{log.read()}")
                    time.sleep(0.2)
            _http(f"{base}/api/v2/alerts", json.dumps([{"labels": lb} for lb, _ in INHIBITION_ALERTS]).encode())
            got = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                alerts = json.loads(_http(f"{base}/api/v2/alerts"))
                got = {json.dumps(a["labels"], sort_keys=True): bool(a["status"]["inhibitedBy"]) for a in alerts}
                if len(got) == len(INHIBITION_ALERTS):
                    break
                time.sleep(0.2)
            expected = {json.dumps(lb, sort_keys=True): inhibited for lb, inhibited in INHIBITION_ALERTS}
            assert got == expected
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


# --- YAML contract checks ---------------------------------------------------------------------


def test_alerts_have_required_labels_and_annotations():
    anchors = runbook_anchors()
    problems = []
    for rule in alert_rules():
        name = rule["alert"]
        if not re.fullmatch(r"Mlmon[A-Z][A-Za-z0-9]*", name):
            problems.append(f"{name}: not CamelCase with the Mlmon prefix")
        labels, ann = rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
        if "for" not in rule:
            problems.append(f"{name}: no `for`")
        missing = REQUIRED_ANNOTATIONS - ann.keys()
        if missing:
            problems.append(f"{name}: missing annotations {sorted(missing)}")
            continue
        if "{{" in ann["summary"]:
            problems.append(f"{name}: summary must be static (templates go in the description)")
        # absent() has no value to state (it is always 1): the description says "found: 0".
        if "$value" not in ann["description"] and not rule["expr"].startswith("absent("):
            problems.append(f"{name}: the description must state the value ($value)")
        if "threshold" not in ann["description"]:
            problems.append(f"{name}: the description must state the threshold")
        url = ann["runbook_url"]
        if not url.startswith(RUNBOOK_BASE):
            problems.append(f"{name}: runbook_url {url} not under {RUNBOOK_BASE}")
        elif url[len(RUNBOOK_BASE) :] != name.lower():
            problems.append(f"{name}: runbook anchor should be #{name.lower()}")
        elif url[len(RUNBOOK_BASE) :] not in anchors:
            problems.append(f"{name}: docs/runbooks.md has no heading for #{url[len(RUNBOOK_BASE) :]}")
        m = re.fullmatch(re.escape(GRAFANA_BASE) + r"/d/([a-z-]+)(\?.*)?", ann["dashboard_url"])
        if not m or m.group(1) not in DASHBOARD_UIDS:
            problems.append(f"{name}: dashboard_url {ann['dashboard_url']} is not {GRAFANA_BASE}/d/<known uid>")
        elif "var-model=" in ann["dashboard_url"] and "var-model={{ $labels.model }}" not in ann["dashboard_url"]:
            problems.append(f"{name}: dashboard_url must pass var-model={{{{ $labels.model }}}}")
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_runbook_section_and_no_stale_sections():
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = set(re.findall(r"^##\s+(Mlmon\w+)\s*$", text, re.M))
    assert sections == set(alert_names())


def _alert_cases() -> tuple[dict, dict]:
    firing: dict[str, set[str]] = {}
    silent: dict[str, int] = {}
    for path in TEST_FILES:
        for group in load_yaml(path).get("tests", []):
            for case in group.get("alert_rule_test") or []:
                name = case["alertname"]
                exp = case.get("exp_alerts") or []
                if not exp:
                    silent[name] = silent.get(name, 0) + 1
                for alert in exp:
                    sev = (alert.get("exp_labels") or {}).get("severity")
                    assert (alert.get("exp_annotations") or {}).keys() >= REQUIRED_ANNOTATIONS, (
                        f"{path.name}: a firing case of {name} must check every annotation"
                    )
                    firing.setdefault(name, set()).add(sev)
    return firing, silent


def test_every_alert_has_a_firing_and_a_silent_case():
    firing, silent = _alert_cases()
    severities: dict[str, set[str]] = {}
    for rule in alert_rules():
        severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    problems = []
    for name, sevs in sorted(severities.items()):
        if not sevs <= firing.get(name, set()):
            problems.append(f"{name}: no firing case for severity {sorted(sevs - firing.get(name, set()))}")
        if not silent.get(name):
            problems.append(f"{name}: no case where it stays silent (exp_alerts: [])")
    unknown = (firing.keys() | silent.keys()) - severities.keys()
    if unknown:
        problems.append(f"tests for unknown alerts: {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_unit_tests_order_every_rule_group_recording_first():
    """Prometheus runs groups independently; promtool only orders the groups it is told about.
    Without a full order, an alert may read a recording of the previous evaluation: flaky tests."""
    groups = rule_groups()
    for path in TEST_FILES:
        doc = load_yaml(path)
        order = doc.get("group_eval_order") or []
        loaded = {g["name"] for f in doc["rule_files"] for g in load_yaml((path.parent / f).resolve())["groups"]}
        assert set(order) >= loaded, f"{path.name}: group_eval_order misses {sorted(loaded - set(order))}"
        assert set(order) <= set(groups), f"{path.name}: unknown groups in group_eval_order"
        rec = [i for i, g in enumerate(order) if g.endswith(".rules")]
        alerts = [i for i, g in enumerate(order) if g.endswith(".alerts")]
        assert not alerts or max(rec) < min(alerts), f"{path.name}: recording groups must come first"


def test_recording_rule_names_follow_convention():
    bad = [
        r["record"]
        for r in recording_rules()
        if not re.fullmatch(r"[a-z]+(?:_[a-z]+)*:mlmon_[a-z0-9_]+:[a-z0-9_]+", r["record"])
    ]
    assert not bad, f"not level:metric:operations: {bad}"


def test_recording_rules_cover_the_issue():
    names = {r["record"] for r in recording_rules()}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
        assert f"model_slo:mlmon_slo_errors:ratio_rate{window}" in names
        assert f"model_slo:mlmon_slo_burn_rate:ratio_rate{window}" in names
    assert "model_slo:mlmon_slo_error_budget_remaining:ratio_rate30d" in names
    quantiles = {
        r.get("labels", {}).get("quantile")
        for r in recording_rules()
        if r["record"] == "model:mlmon_prediction_latency_seconds:histogram_quantile_rate5m"
    }
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert {
        "model:mlmon_predictions:rate5m",
        "model:mlmon_prediction_errors:ratio_rate5m",
        "model:mlmon_drifted_features:count",
        "model_method:mlmon_feature_drift_score:max",
    } <= names


def _contract_metrics() -> set[str] | None:
    """Every series name and family name the catalogue (exporter/contract.py) declares."""
    return set(series_names()) | set(BY_NAME)


def test_rules_only_read_contract_metrics():
    contract = _contract_metrics()
    assert contract, "exporter/contract.py declares no metric"
    used = set()
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                text = rule["expr"] + " " + " ".join(rule.get("annotations", {}).values())
                # Recorded series (level:metric:ops) contain colons; raw metrics do not.
                used |= set(re.findall(r"(?<![:\w])(mlmon_[a-z0-9_]+)(?![:\w])", text))

    def known(metric: str) -> bool:
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        return metric in contract or base in contract or metric in PENDING_CONTRACT_METRICS

    unknown = sorted(m for m in used if not known(m))
    assert not unknown, f"metrics not in the contract: {unknown}"
