"""The metric contract (exporter/contract.py) against what is really exposed and read.

The catalogue must list exactly what the collector produces under a demo-like workload
(labels, fairness groups, every SLO type, a bad record, an unknown model), every metric the
shipped rules and dashboards read (from the files on disk, whatever generates them), and
docs/metrics.md must be what the catalogue generates.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import curl_events, read_samples
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import StateConfig
from exporter.contract import BY_NAME, METRICS, series_names
from exporter.demo import (
    AGE_BANDS,
    MODEL,
    demo_baseline,
    demo_config,
    predict,
    simulate_customers,
    true_churn_probability,
)
from exporter.formats import decode_event
from exporter.formats.native import parse_predictions
from exporter.proxy import ProxyStats
from exporter.service import Service

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ("process_", "python_")
"""prometheus_client's own collectors (exporter/selfmon.py): exposed, but not mlmon's contract."""
_NAME = re.compile(r"(?<![:\w])(mlmon_[a-z0-9_]+)(?![:\w])")


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The /metrics text after a demo-like workload on the demo model (in process, no HTTP), with
    checkpoints on so their families are exposed too."""
    config = replace(demo_config(0), state=StateConfig(dir=tmp_path_factory.mktemp("state")))
    service = Service(config, {MODEL: demo_baseline()})
    monitor = service.monitor(MODEL)
    assert monitor is not None
    rng = np.random.default_rng(3)
    n = 2_000
    df = simulate_customers(n, rng)
    proba, _ = predict(df)
    truth = np.where(rng.random(n) < true_churn_probability(df, None), "churn", "stay")
    ages = df["age"].to_numpy()
    ids = [f"id-{i}" for i in range(n)]
    body = {"model": MODEL, "version": "v1", "ids": ids,
            "features": {c: df[c].tolist() for c in df.columns},
            "predictions": [{"churn": float(p), "stay": float(1 - p)} for p in proba],
            "latency_seconds": rng.lognormal(np.log(0.02), 0.6, n).tolist(),
            "errors": (rng.random(n) < 0.01).tolist(),
            "groups": {"age_band": np.select([ages < 30, ages < 45, ages < 60], AGE_BANDS[:3], AGE_BANDS[3]).tolist(),
                       "region": df["region"].tolist()}}
    body["features"]["age"][0] = "not a number"
    body["features"]["shoe_size"] = [42] * n
    monitor.ingest(parse_predictions(body))
    monitor.ingest(parse_predictions({"model": MODEL, "records": [{"features": "not an object"}]}))
    monitor.ingest_labels(ids[:1_500], truth[:1_500].tolist())
    monitor.ingest_labels(["nobody", ids[0]], ["churn", "churn"])
    service.count_unattributed("unknown_model")
    # A payload logger's request/response pair (its inference service is not a configured model, so
    # the joiner counts it under __unknown__), a client's reported loss, and the counters
    # `mlmon proxy` wires into the service.
    for headers, raw in curl_events("seldon/v1_request_logger_test_events.txt"):
        service.handle_event(decode_event(headers, raw))
    service.record_client_loss(MODEL, "contract-test", {"dropped": 2, "failed": 1, "unserialisable": 0})
    proxy = ProxyStats()
    proxy.request(MODEL, "2xx")
    proxy.monitor_event("queue_full")
    service.proxy_stats = proxy.snapshot
    monitor.evaluate()
    return generate_latest(service.registry).decode()


def test_every_exposed_family_is_in_the_catalogue_with_its_type_help_and_labels(exposition):
    for fam in text_string_to_metric_families(exposition):
        if fam.name.startswith(FOREIGN):
            continue
        assert fam.name in BY_NAME, f"{fam.name} is exposed but not declared in exporter/contract.py"
        declared = BY_NAME[fam.name]
        assert fam.type == declared.kind, fam.name
        assert fam.documentation == declared.help, fam.name
        for s in fam.samples:
            assert s.name in declared.series, s.name
            assert set(s.labels) - {"le"} == set(declared.labels), (s.name, s.labels)


def test_every_catalogue_metric_is_produced_by_the_collector(exposition):
    produced = {name for name, _, _ in read_samples(exposition)}
    missing = sorted(m.exposed for m in METRICS if not set(m.series) & produced)
    assert not missing, f"declared in exporter/contract.py but never exposed: {missing}"


def test_self_monitoring_families_are_exposed_but_not_catalogued(exposition):
    names = {fam.name for fam in text_string_to_metric_families(exposition)}
    assert "mlmon_scrape_duration_seconds" in names
    foreign = {n for n in names if n.startswith(FOREIGN)}
    assert "process_resident_memory_bytes" in foreign or "python_info" in foreign, sorted(names)
    assert not foreign & set(BY_NAME), "process_*/python_* belong to prometheus_client, not the catalogue"


def test_catalogue_is_well_formed():
    assert len(BY_NAME) == len(METRICS), "a metric is declared twice"
    for m in METRICS:
        assert m.name.startswith("mlmon_") and not m.name.endswith("_total"), m.name
        assert m.help.endswith("."), m.name
        assert m.labels or m.theme in ("self", "build", "events"), \
            f"{m.name}: only process-wide families may have no labels"
        if m.unit in ("seconds", "timestamp"):
            assert m.name.endswith("_seconds"), m.name
        if m.unit == "ratio" and m.name.endswith(("_seconds", "_total")):
            pytest.fail(f"{m.name}: a ratio named like another unit")


def _rule_texts() -> list[str]:
    texts = []
    for path in sorted((ROOT / "alerting" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                texts.append(rule["expr"])
                texts += [str(v) for v in rule.get("annotations", {}).values()]
    return texts


def _dashboard_texts() -> list[str]:
    return [(ROOT / "grafana" / "dashboards").joinpath(p.name).read_text(encoding="utf-8")
            for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))]


@pytest.mark.parametrize("source", ["rules", "dashboards"])
def test_rules_and_dashboards_read_only_catalogue_series(source):
    texts = _rule_texts() if source == "rules" else [
        json.dumps(json.loads(t)) for t in _dashboard_texts()]
    used = {name for text in texts for name in _NAME.findall(text)}
    assert used, f"no mlmon_ metric found in the {source}"
    unknown = sorted(used - set(series_names()))
    assert not unknown, f"{source} read series the catalogue does not declare: {unknown}"


def test_metrics_doc_is_generated_from_the_catalogue():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_metrics.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert all(f"`{m.exposed}`" in doc for m in METRICS)
