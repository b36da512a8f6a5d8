"""Dashboards against a real fleet: two demo replicas scraped by a real Prometheus with the shipped
rules (``for:`` shortened to 5 s).

* Only one replica degrades (its traffic has strong concept drift, so its labelled accuracy falls
  below the threshold; the other replica's world is unchanged): the panel that
  ``MlmonModelQualityDegraded``'s ``dashboard_url`` opens — variables and ``viewPanel`` taken from
  the alert's own annotation — shows the degraded replica's value, and the quality dashboard's
  worst-replica stat shows it too (a fleet-wide max() would have shown the healthy one).
* Versions: after a two-record "v3" canary, "Versions serving" still shows only v1; restarting
  every sidecar (new processes state, counters from zero, new in-memory first-seen times) adds no
  deploy marker. The dashboards for this check are generated with a 20 s deploy lookback so that
  the marker of the run's own start has ended before the restart.

Needs the ``prometheus`` binary: skipped without it on a workstation, a failure in CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from helpers import grafana_builtins, substitute
from stack import demo_exporter, free_port, prometheus, rules_with_short_for, wait_until

from exporter.demo import MODEL, DriftPlan
from mixin import config as mixin_config
from mixin.dashboards import build_dashboard_objects

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
HEALTHY = dict(drift_after=1e9)
DEGRADED = dict(drift_after=0.0, plan=DriftPlan(concept_shift=4.0))
RATE = 120.0
FIRE_TIMEOUT = 90.0


def _values(extra: dict[str, str]) -> dict[str, str]:
    return {**grafana_builtins(1), "datasource": "prometheus", **extra}


def _panel(dashboard: dict[str, Any], *, pid: int | None = None, title: str | None = None) -> dict[str, Any]:
    for p in dashboard["panels"]:
        if (pid is not None and p["id"] == pid) or (title is not None and p["title"] == title):
            return p
    raise AssertionError(f"no panel {pid or title!r} in {dashboard['uid']}")


def _instances_regex(*targets: str) -> str:
    return "|".join(t.replace(".", "\\\\.") for t in targets)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("replicas")
    ports = [free_port(), free_port()]
    fleet: dict[str, Any] = {"ports": ports, "sidecars": ExitStack()}
    try:
        sidecars = fleet["sidecars"]
        fleet["healthy"] = sidecars.enter_context(demo_exporter(rate=RATE, label_delay=0.3, port=ports[0], **HEALTHY))
        fleet["degraded"] = sidecars.enter_context(
            demo_exporter(rate=RATE, label_delay=0.3, port=ports[1], **DEGRADED))
        with prometheus(tmp, [fleet["healthy"].target, fleet["degraded"].target], rules_with_short_for(tmp)) as prom:
            fleet["prom"] = prom
            yield fleet
    finally:
        fleet["sidecars"].close()  # the restart test may have replaced them


def test_quality_alert_link_opens_the_degraded_replica(fleet: dict[str, Any]):
    prom, healthy, degraded = fleet["prom"], fleet["healthy"], fleet["degraded"]
    alerts = wait_until(
        lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "MlmonModelQualityDegraded"
                 and a["state"] == "firing" and a["labels"]["metric"] == "accuracy"],
        FIRE_TIMEOUT, interval=1.0, what="MlmonModelQualityDegraded firing for accuracy")
    assert {a["labels"]["instance"] for a in alerts} == {degraded.target}, "only the degraded replica alerts"
    alert = alerts[0]

    url = urlsplit(alert["annotations"]["dashboard_url"])
    uid = url.path.split("/")[2]
    params = {k[len("var-"):]: v[0] for k, v in parse_qs(url.query).items() if k.startswith("var-")}
    assert params["instance"] == degraded.target and params["metric"] == "accuracy"
    dashboard = json.loads((DASHBOARD_DIR / f"{uid.removeprefix('mlmon-')}.json").read_text(encoding="utf-8"))
    panel = _panel(dashboard, pid=int(parse_qs(url.query)["viewPanel"][0]))
    values = _values(params)

    at = time.time()
    quality = {s["metric"]["instance"]: float(s["value"][1]) for s in prom.query(
        f'mlmon_model_quality{{model="{MODEL}", metric="accuracy", class=""}}', at=at)}
    threshold = float(prom.query(f'max(mlmon_model_quality_threshold{{model="{MODEL}", metric="accuracy"}})',
                                 at=at)[0]["value"][1])
    assert quality[degraded.target] < threshold < quality[healthy.target], (quality, threshold)

    shown = [s for t in panel["targets"] for s in prom.query(substitute(t["expr"], values), at=at)]
    assert shown, f"panel {panel['title']!r} opened by the alert shows nothing"
    by_instance = {s["metric"]["instance"]: float(s["value"][1]) for s in shown}
    assert by_instance == {degraded.target: pytest.approx(quality[degraded.target], abs=1e-9)}

    # With every replica selected, the worst-replica stat shows the degraded value, not the fleet max.
    worst = _panel(dashboard, title="Accuracy, worst replica")
    fleet_values = _values({**params, "instance": _instances_regex(healthy.target, degraded.target),
                            "version": ".*"})
    [sample] = prom.query(substitute(worst["targets"][0]["expr"], fleet_values), at=at)
    assert float(sample["value"][1]) == pytest.approx(min(quality.values()), abs=1e-9)


def _start(sidecars: ExitStack, port: int, kind: dict[str, Any]) -> bool:
    """Start a sidecar on ``port``; False while the stopped one's socket is still being released."""
    try:
        sidecars.enter_context(demo_exporter(rate=RATE, label_delay=0.3, port=port, **kind))
    except OSError:
        return False
    return True


def _post_canary(url: str) -> None:
    records = [{"id": f"canary-{i}", "features": {"tenure_months": 3.0, "monthly_charges": 70.0},
                "prediction": {"churn": 0.4, "stay": 0.6}, "latency_seconds": 0.02} for i in range(2)]
    r = requests.post(f"{url}/v1/predictions", json={"model": MODEL, "version": "v3", "records": records}, timeout=10)
    assert r.status_code in (200, 202), r.text


def test_serving_after_canary_and_no_deploy_marker_on_restart(fleet: dict[str, Any]):
    prom, healthy = fleet["prom"], fleet["healthy"]
    doc = yaml.safe_load(mixin_config.DEFAULT_PATH.read_text(encoding="utf-8"))
    boards = build_dashboard_objects(mixin_config.parse({**doc, "deploy_lookback": "20s"}))
    overview, service = boards["overview"], boards["service"]
    serving = _panel(overview, title="Versions serving")["targets"][0]["expr"]
    deploys = next(a for a in service["annotations"]["list"] if a.get("name") == "Deploys")["expr"]
    values = _values({"job": "mlmon", "instance": ".*", "model": MODEL, "version": ".*"})

    wait_until(lambda: prom.query("model_version:mlmon_predictions:rate5m"), 60, what="traffic recorded")
    _post_canary(healthy.url)
    wait_until(lambda: prom.query('mlmon_predictions_total{version="v3"}'), 30, what="the canary scraped")
    time.sleep(3)  # a few scrapes and rule evaluations with the canary in the data
    # The newest version by first-seen time, what the old "Version serving" panel showed, is the canary.
    newest = prom.query(f'topk(1, min by (version) (mlmon_model_version_first_seen_timestamp_seconds'
                        f'{{model="{MODEL}"}}))')
    assert [s["metric"]["version"] for s in newest] == ["v3"]
    shown = prom.query(substitute(serving, values))
    assert {s["metric"]["version"] for s in shown} == {"v1"}, shown
    assert float(shown[0]["value"][1]) > 0.99

    # The run's own deploy markers (v1 at the start, v3 just now) must be over before the restart,
    # so that anything drawn afterwards could only come from the restart.
    wait_until(lambda: not prom.query(substitute(deploys, values)), 60, interval=2.0,
               what="the run's own deploy markers to end (20 s lookback)")
    first_seen_before = {s["metric"]["instance"]: float(s["value"][1]) for s in prom.query(
        f'min by (instance) (mlmon_model_version_first_seen_timestamp_seconds{{model="{MODEL}"}})')}

    restart_at = time.time()
    fleet["sidecars"].close()  # every sidecar stops; Prometheus keeps scraping the same targets
    fleet["sidecars"] = again = ExitStack()
    for port, kind in zip(fleet["ports"], (HEALTHY, DEGRADED), strict=True):
        wait_until(lambda port=port, kind=kind: _start(again, port, kind), 30, what=f"port {port} free again")
    wait_until(lambda: len(prom.query(
        f'mlmon_model_version_first_seen_timestamp_seconds{{model="{MODEL}"}} > {restart_at}')) == 2,
        60, what="both restarted sidecars scraped")
    time.sleep(10)  # a few rule evaluations after the restart
    first_seen_after = {s["metric"]["instance"]: float(s["value"][1]) for s in prom.query(
        f'min by (instance) (mlmon_model_version_first_seen_timestamp_seconds{{model="{MODEL}"}})')}
    # In-memory first-seen times moved: markers drawn from them would have appeared on every replica.
    assert all(first_seen_after[i] > first_seen_before[i] for i in first_seen_before)
    r = requests.get(f"{prom.url}/api/v1/query_range", params={
        "query": substitute(deploys, values), "start": restart_at, "end": time.time(), "step": "1s"}, timeout=10)
    body = r.json()
    assert body["status"] == "success", body
    assert body["data"]["result"] == [], f"deploy markers after a restart: {body['data']['result']}"
    assert {s["metric"]["version"] for s in prom.query(substitute(serving, values))} == {"v1"}
