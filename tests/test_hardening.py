"""Issue 9: nothing accepted breaks a later read, caps on client-controlled input, 415, config checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import requests
from helpers import make_config, metric, rows, serve, shop_model

from exporter.config import ConfigError, LimitsConfig, QualityThreshold, config_from_dict
from exporter.openapi import openapi_document
from exporter.server import ROUTE_GROUPS, create_app
from exporter.service import Service

SURROGATE_BODIES = [
    b'{"model": "shop", "version": "\\ud800", "records": []}',
    b'{"model": "shop", "records": [{"features": {"\\udc00x": 1}}]}',
    b'{"model": "\\ud800", "records": []}',
    b'{"model": "shop", "records": [{"features": {"plan": "\\ud83d"}, "prediction": "yes"}]}',
]


def post_raw(server, path: str, body: bytes, content_type: str = "application/json") -> requests.Response:
    return requests.post(server.url + path, data=body, headers={"Content-Type": content_type}, timeout=10)


@pytest.mark.parametrize("body", SURROGATE_BODIES)
def test_lone_surrogate_is_400_and_reads_keep_working(live_server, body):
    r = post_raw(live_server, "/v1/predictions", body)
    assert r.status_code == 400, r.text
    assert "invalid Unicode" in r.json()["error"]
    assert live_server.get("/metrics").status_code == 200
    assert live_server.get("/v1/models").status_code == 200


def test_lone_surrogate_in_a_structured_event_is_400(live_server):
    body = (b'{"specversion": "1.0", "id": "1", "source": "s", "type": "org.kubeflow.serving.inference.request",'
            b' "inferenceservicename": "shop", "modelversion": "\\ud800", "data": {"instances": [[1, 2]]}}')
    r = post_raw(live_server, "/v1/events", body, "application/cloudevents+json")
    assert r.status_code == 400, r.text
    assert live_server.get("/metrics").status_code == 200


@pytest.mark.parametrize("field", ["latency_seconds", "prediction"])
def test_integer_beyond_float_range_is_refused_per_record(live_server, field):
    good = rows(3)
    huge = "1" + "0" * 400
    body = ('{"model": "shop", "records": [' + ",".join(
        requests.models.complexjson.dumps(r) for r in good[:2]) + ',{"features": {"age": 1}, "' + field + '": '
        + huge + "}]}").encode()
    r = post_raw(live_server, "/v1/predictions", body)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 2 and rejected["field"] == f"records[2].{field}"


def test_integer_beyond_float_range_in_columns_and_features(live_server):
    huge = "9" * 500
    body = ('{"model": "shop", "features": {"age": [' + huge + ', 3]}, "latency_seconds": [-' + huge
            + ", 0.1], \"predictions\": [\"yes\", " + huge + "]}").encode()
    r = post_raw(live_server, "/v1/predictions", body)
    assert r.status_code in (200, 422), r.text
    assert {x["index"] for x in r.json()["rejected"]} == {0, 1}
    assert live_server.get("/metrics").status_code == 200


def test_columns_of_different_lengths_without_features_are_400(live_server):
    r = live_server.post("/v1/predictions", {"model": "shop", "features": {}, "ids": ["a"],
                                             "predictions": ["yes", {}]})
    assert r.status_code == 400 and r.json()["field"] == "predictions"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          ""])
def test_non_json_post_is_415_and_counted(live_server, content_type):
    r = post_raw(live_server, "/v1/predictions", b'{"model": "shop", "records": []}', content_type)
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    assert metric(live_server, "mlmon_ingest_rejected_total", model="__unknown__",
                  reason="unsupported_media_type") >= 1


def test_version_cap_retires_the_least_recently_seen(small_baseline):
    model = shop_model(limits=LimitsConfig(max_versions=3))
    for server in serve(Service(make_config(model), {"shop": small_baseline})):
        for v in ("a", "b", "c", "a", "d"):
            assert server.post("/v1/predictions", {"model": "shop", "version": v, "records": rows(2)}).ok
        seen = {v for v in "abcd" if metric(server, "mlmon_predictions_total", model="shop", version=v) is not None}
        assert seen == {"a", "c", "d"}  # b was the least recently seen when d came
        assert metric(server, "mlmon_limit_hits_total", model="shop", limit="max_versions") == 1


def test_long_version_class_and_feature_names_never_become_labels(small_baseline):
    model = shop_model(limits=LimitsConfig(max_label_length=16))
    for server in serve(Service(make_config(model), {"shop": small_baseline})):
        long = "v" * 100_000
        columns = {"model": "shop", "features": {"age": [1.0, 2.0], long: [1, 2]}, "predictions": [long, "yes"]}
        r = server.post("/v1/predictions", columns)
        assert r.status_code == 200, r.text
        text = server.get("/metrics").text
        assert long[:17] not in text and len(text) < 200_000
        assert metric(server, "mlmon_limit_hits_total", model="shop", limit="max_label_length") >= 1
        assert server.get("/v1/models").json()["models"][0]["unknown_features"] == []
        # the 128-character cap of the native API refuses a long version with the field named
        r = server.post("/v1/predictions", {"model": "shop", "version": long, "records": rows(1)})
        assert r.status_code == 400 and r.json()["field"] == "version"


def test_unknown_feature_names_are_capped_in_count(small_baseline):
    model = shop_model(limits=LimitsConfig(max_unknown_feature_names=5))
    for server in serve(Service(make_config(model), {"shop": small_baseline})):
        features = {f"x{i}": [1] for i in range(200)}
        assert server.post("/v1/predictions", {"model": "shop", "features": features}).ok
        status = server.get("/v1/models").json()["models"][0]
        assert len(status["unknown_features"]) == 5
        assert metric(server, "mlmon_unknown_features_total", model="shop") == 200
        assert metric(server, "mlmon_limit_hits_total", model="shop", limit="max_unknown_feature_names") == 195


def test_limits_config_keys_are_validated():
    base = {"models": [{"name": "m", "baseline": "b.json"}]}
    cfg = config_from_dict({**base, "limits": {"max_versions": 5, "max_label_length": 64}})
    assert cfg.models[0].limits == LimitsConfig(max_versions=5, max_label_length=64)
    with pytest.raises(ConfigError) as err:
        config_from_dict({**base, "limits": {"max_versions": 0, "max_label_length": 5000, "nope": 1}})
    text = str(err.value)
    assert "limits.max_versions: must be a positive whole number" in text
    assert "limits.max_label_length: must be at most 1024" in text
    assert "limits.nope: unknown key" in text


def test_server_config_keys_are_validated():
    base = {"models": [{"name": "m", "baseline": "b.json"}]}
    cfg = config_from_dict({**base, "server": {"metrics_listen": "127.0.0.1:9100", "idle_timeout": "10s",
                                              "request_timeout": "5s", "drain_timeout": "30s",
                                              "connection_limit": 200}})
    s = cfg.server
    assert (s.metrics_listen, s.idle_timeout_seconds, s.request_timeout_seconds, s.drain_timeout_seconds,
            s.connection_limit) == ("127.0.0.1:9100", 10, 5, 30, 200)
    with pytest.raises(ConfigError) as err:
        config_from_dict({**base, "server": {"listen": "127.0.0.1:8000", "metrics_listen": "127.0.0.1:8000",
                                             "drain_timeout": "-1s"}})
    assert "server.metrics_listen: must differ from server.listen" in str(err.value)
    assert "server.drain_timeout" in str(err.value)


# ---- config ↔ baseline (item 6) ----------------------------------------------------------------

def _service_problems(baseline, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        Service(make_config(shop_model(**kw)), {"shop": baseline})
    return str(err.value)


def test_positive_class_not_in_the_baseline_is_refused(small_baseline):
    text = _service_problems(small_baseline, positive_class="maybe")
    assert "models[0].positive_class: 'maybe' is not a class of the baseline (classes: no, yes)" in text
    Service(make_config(shop_model(positive_class="yes")), {"shop": small_baseline})  # a real class is fine


def test_task_that_contradicts_the_baseline_is_refused(small_baseline):
    text = _service_problems(small_baseline, task="regression", task_explicit=True)
    assert "models[0].task: is 'regression' but the baseline" in text and "'classification'" in text


def test_quality_threshold_for_the_wrong_task_or_missing_reference(small_baseline):
    text = _service_problems(small_baseline, quality_thresholds={
        "mae": QualityThreshold(absolute=1.0), "f1": QualityThreshold(absolute=3.0)})
    assert "models[0].quality.thresholds.mae: not a classification metric" in text
    assert "models[0].quality.thresholds.f1: must be between 0 and 1" in text
    no_reference = replace(small_baseline, reference_quality={})
    text = _service_problems(no_reference, quality_thresholds={"accuracy": QualityThreshold(baseline_offset=-0.05)})
    assert "models[0].quality.thresholds.accuracy: is relative to the baseline" in text


def test_check_config_reports_the_mismatch(tmp_path, small_baseline, capsys):
    from exporter.cli import main

    small_baseline.save(tmp_path / "b.json")
    (tmp_path / "mlmon.yaml").write_text("models:\n  - name: shop\n    baseline: b.json\n    positive_class: maybe\n"
                                         "    task: regression\n")
    assert main(["check-config", str(tmp_path / "mlmon.yaml")]) == 1
    err = capsys.readouterr().err
    assert "models[0].positive_class" in err and "models[0].task" in err


# ---- OpenAPI (item 7) --------------------------------------------------------------------------

def test_openapi_describes_every_route(small_baseline):
    service = Service(make_config(), {"shop": small_baseline})
    for groups in (ROUTE_GROUPS, ("ingest", "read"), ("scrape",)):
        app = create_app(service, groups=groups)
        routes = {(r.rule, m.lower()) for r in app.url_map.iter_rules() if r.endpoint != "static"
                  for m in r.methods - {"HEAD", "OPTIONS"}}
        doc = openapi_document(groups)
        documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
        assert routes == documented


def test_openapi_is_served(live_server):
    doc = live_server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/v1/predictions" in doc["paths"]
