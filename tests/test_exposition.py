"""The live /metrics exposition: promtool accepts it and it follows the metric contract."""

from __future__ import annotations

import subprocess

import pytest
from helpers import make_config, require_tool, rows, serve, shop_model

from exporter.config import DriftConfig
from exporter.service import Service


@pytest.mark.tools
def test_promtool_check_metrics_passes_on_live_exposition(live_server):
    promtool = require_tool("promtool")
    recs = rows(300)
    recs[0]["features"]["age"] = "bad"
    live_server.post("/v1/predictions", {"model": "shop", "version": "v1", "records": recs})
    live_server.post("/v1/predictions", {"model": "nope", "records": rows(1)})
    live_server.service.monitor("shop").evaluate()
    text = live_server.get("/metrics").text
    assert "mlmon_feature_drift_score{" in text and "mlmon_slo_events_total{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exposition_has_help_types_and_base_units(live_server):
    live_server.post("/v1/predictions", {"model": "shop", "version": "v1", "records": rows(300)})
    ev = live_server.service.monitor("shop").evaluate()
    text = live_server.get("/metrics").text
    families = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP") and len(line.split()) > 3}
    assert set(families) <= helps
    expected = {
        "mlmon_predictions": "counter", "mlmon_prediction_errors": "counter",
        "mlmon_prediction_latency_seconds": "histogram", "mlmon_ingest_rejected": "counter",
        "mlmon_last_prediction_timestamp_seconds": "gauge", "mlmon_model_version_info": "gauge",
        "mlmon_model_version_first_seen_timestamp_seconds": "gauge", "mlmon_prediction_class": "counter",
        "mlmon_feature_bin": "counter", "mlmon_baseline_bin_ratio": "gauge", "mlmon_feature_drift_score": "gauge",
        "mlmon_feature_drift_pvalue": "gauge", "mlmon_feature_drift_threshold": "gauge",
        "mlmon_feature_drift_detected": "gauge", "mlmon_window_samples": "gauge",
        "mlmon_feature_missing": "counter", "mlmon_feature_out_of_range": "counter",
        "mlmon_feature_unexpected_category": "counter", "mlmon_feature_type_errors": "counter",
        "mlmon_unknown_features": "counter", "mlmon_slo_events": "counter", "mlmon_slo_bad_events": "counter",
        "mlmon_slo_objective_ratio": "gauge", "mlmon_build_info": "gauge", "mlmon_drifted_features": "gauge",
    }
    for name, kind in expected.items():
        exposed = f"{name}_total" if kind == "counter" else name  # the text format names counters *_total
        assert families.get(exposed) == kind, name
    for method in ("psi", "js", "kl", "ks", "wasserstein"):
        assert f'mlmon_feature_drift_score{{feature="age",method="{method}",model="shop"}}' in text
    assert 'mlmon_feature_drift_score{feature="plan",method="chi2",model="shop"}' in text
    assert 'mlmon_feature_drift_pvalue{feature="age",method="ks",model="shop"}' in text
    # The threshold in force for the detection method (KS by default) at the window's n, calibrated.
    age = next(f for f in ev.features if f.feature == "age")
    assert f'mlmon_feature_drift_threshold{{feature="age",method="ks",model="shop"}} {age.thresholds["ks"]!r}' in text
    assert 0.02 <= age.thresholds["ks"] < 1
    assert 'mlmon_feature_drift_detected{feature="__prediction__",model="shop"}' in text


def test_per_bin_series_can_be_switched_off(small_baseline):
    """drift.export_bins: false drops the per-bin series (the fleet rules' input) and nothing else."""
    for export_bins in (True, False):
        service = Service(make_config(shop_model(drift=DriftConfig(export_bins=export_bins))),
                          {"shop": small_baseline})
        for server in serve(service):
            server.post("/v1/predictions", {"model": "shop", "version": "v1", "records": rows(100)})
            service.monitor("shop").evaluate()
            text = server.get("/metrics").text
            assert ("mlmon_feature_bin_total{" in text) is export_bins
            assert ("mlmon_baseline_bin_ratio{" in text) is export_bins
            assert "mlmon_feature_drift_score{" in text and "mlmon_baseline_samples{" in text
