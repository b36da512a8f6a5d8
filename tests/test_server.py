"""The HTTP API against a real server on 127.0.0.1: good input, bad input, auth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests
from helpers import fixture, make_config, metric, rows, serve

from exporter.service import Service


def test_row_form_batch_is_counted(live_server):
    r = live_server.post("/v1/predictions", {"model": "shop", "version": "v2", "records": rows(50)})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 50 and r.json()["rejected"] == []
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v2") == 50
    assert metric(live_server, "mlmon_prediction_latency_seconds_count", model="shop", version="v2") == 50
    assert metric(live_server, "mlmon_prediction_class_total", model="shop", version="v2", **{"class": "yes"}) == 50


def test_columnar_form_batch_is_counted(live_server):
    n = 30
    body = {"model": "shop", "version": "v1", "ids": [f"c{i}" for i in range(n)],
            "features": {"age": [30.0] * n, "income": [1e4] * n, "visits": [1] * n, "plan": ["pro"] * n,
                         "country": ["fr"] * n},
            "predictions": [{"yes": 0.8, "no": 0.2}] * n, "latency_seconds": [0.5] * n,
            "errors": [False] * (n - 1) + [True]}
    r = live_server.post("/v1/predictions", body)
    assert r.status_code == 200 and r.json()["accepted"] == n
    assert metric(live_server, "mlmon_prediction_errors_total", model="shop", version="v1") == 1
    assert metric(live_server, "mlmon_slo_bad_events_total", model="shop", slo="latency") == n
    assert metric(live_server, "mlmon_slo_bad_events_total", model="shop", slo="availability") == 1


def test_malformed_json_is_400(live_server):
    r = requests.post(live_server.url + "/v1/predictions", data=b'{"model": "shop", "records": [',
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]
    assert metric(live_server, "mlmon_ingest_rejected_total", model="__unknown__", reason="malformed_json") == 1


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "$"), ({"records": []}, "model"), ({"model": "shop"}, "records"),
    ({"model": "shop", "records": {"a": 1}}, "records"),
    ({"model": "shop", "features": {"age": [1, 2], "income": [1]}}, "features.income"),
    ({"model": "shop", "features": {"age": [1, 2]}, "predictions": [1]}, "predictions"),
])
def test_bad_shapes_are_400_naming_the_field(live_server, body, field):
    r = live_server.post("/v1/predictions", body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


def test_unknown_model_is_404_naming_the_configured_models(live_server):
    r = live_server.post("/v1/predictions", {"model": "nope", "records": rows(2)})
    assert r.status_code == 404
    assert r.json()["models"] == ["shop"] and "shop" in r.json()["error"]
    assert metric(live_server, "mlmon_ingest_rejected_total", model="__unknown__", reason="unknown_model") == 2


def test_oversized_body_is_413(small_baseline):
    service = Service(make_config(max_body_bytes=2000), {"shop": small_baseline})
    for server in serve(service):
        r = server.post("/v1/predictions", {"model": "shop", "records": rows(100)})
        assert r.status_code == 413
        assert "max_body_bytes" in r.json()["error"]
        assert metric(server, "mlmon_ingest_rejected_total", model="__unknown__", reason="payload_too_large") == 1
        assert server.post("/v1/predictions", {"model": "shop", "records": rows(2)}).status_code == 200


def test_three_broken_records_of_100_are_refused_alone(live_server):
    records = rows(100)
    records[5] = "not a record"
    records[40]["latency_seconds"] = -1
    records[60]["latency_seconds"] = 1e308  # would make the latency histogram's sum +Inf for good
    records[77]["features"] = [1, 2, 3]
    r = live_server.post("/v1/predictions", {"model": "shop", "records": records})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 96
    assert [x["index"] for x in body["rejected"]] == [5, 40, 60, 77]
    assert body["rejected"][1] == {"index": 40, "field": "records[40].latency_seconds",
                                   "reason": "must be a number of seconds from 0 to 86,400"}
    assert all(x["reason"] for x in body["rejected"])
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="unknown") == 96
    assert metric(live_server, "mlmon_ingest_rejected_total", model="shop", reason="invalid_record") == 4
    assert metric(live_server, "mlmon_prediction_latency_seconds_sum", model="shop", version="unknown") < 1e6


def test_broken_columnar_entries_are_refused_alone(live_server):
    n = 10
    body = {"model": "shop", "features": {"age": [1.0] * n}, "predictions": ["yes"] * 9 + [{"yes": 7}],
            "latency_seconds": [0.1] * 3 + ["slow"] + [0.1] * 6}
    r = live_server.post("/v1/predictions", body)
    assert r.status_code == 200
    assert r.json()["accepted"] == 8
    assert [(x["index"], x["field"]) for x in r.json()["rejected"]] == [(3, "latency_seconds[3]"),
                                                                        (9, "predictions[9]")]


def test_nan_inf_none_and_strings_are_counted_not_fatal(live_server):
    raw = (b'{"model": "shop", "records": ['
           b'{"features": {"age": NaN, "income": Infinity, "visits": null, "plan": "basic", "country": "de"}},'
           b'{"features": {"age": "forty", "income": -Infinity, "visits": 2, "plan": ["x"], "country": "xx"}},'
           b'{"features": {"age": 41.0, "income": 1000.0, "visits": 1, "plan": "pro", "country": "fr"}}]}')
    r = requests.post(live_server.url + "/v1/predictions", data=raw, headers={"Content-Type": "application/json"},
                      timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    dq = r.json()["data_quality"]
    assert dq["missing"] == 4 and dq["type_errors"] == 2 and dq["unexpected"] == 1
    assert metric(live_server, "mlmon_feature_missing_total", model="shop", feature="age") == 1
    assert metric(live_server, "mlmon_feature_missing_total", model="shop", feature="income") == 2
    assert metric(live_server, "mlmon_feature_type_errors_total", model="shop", feature="age") == 1
    assert metric(live_server, "mlmon_feature_type_errors_total", model="shop", feature="plan") == 1
    assert metric(live_server, "mlmon_feature_unexpected_category_total", model="shop", feature="country") == 1


def test_unknown_features_are_counted_without_a_feature_label(live_server):
    recs = rows(4)
    for i, rec in enumerate(recs):
        rec["features"][f"surprise_{i}"] = 1.0
    r = live_server.post("/v1/predictions", {"model": "shop", "records": recs})
    assert r.status_code == 200 and r.json()["data_quality"]["unknown_features"] == 4
    assert metric(live_server, "mlmon_unknown_features_total", model="shop") == 4
    status = live_server.get("/v1/models").json()["models"][0]
    assert sorted(status["unknown_features"]) == [f"surprise_{i}" for i in range(4)]


def test_missing_feature_counts_as_missing(live_server):
    recs = rows(5)
    for rec in recs:
        del rec["features"]["income"]
    assert live_server.post("/v1/predictions", {"model": "shop", "records": recs}).status_code == 200
    assert metric(live_server, "mlmon_feature_missing_total", model="shop", feature="income") == 5


def test_empty_batches_are_accepted(live_server):
    for body in ({"model": "shop", "records": []}, {"model": "shop", "features": {}}):
        r = live_server.post("/v1/predictions", body)
        assert r.status_code == 200 and r.json() == {
            "accepted": 0, "rejected": [], "data_quality": r.json()["data_quality"]}
    assert metric(live_server, "mlmon_predictions_total", model="shop") is None


def test_all_records_broken_is_422(live_server):
    r = live_server.post("/v1/predictions", {"model": "shop", "records": [1, 2]})
    assert r.status_code == 422 and r.json()["accepted"] == 0 and len(r.json()["rejected"]) == 2


def test_nothing_ingested_is_lost_after_bad_requests(live_server):
    live_server.post("/v1/predictions", {"model": "shop", "records": rows(10)})
    requests.post(live_server.url + "/v1/predictions", data=b"\xff\xfe", timeout=5)
    live_server.post("/v1/predictions", {"model": "other", "records": rows(3)})
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="unknown") == 10


def test_health_readiness_and_status(live_server):
    assert live_server.get("/healthz").json() == {"status": "ok"}
    assert live_server.get("/readyz").status_code == 200
    live_server.post("/v1/predictions", {"model": "shop", "version": "v1", "records": rows(60)})
    live_server.service.monitor("shop").evaluate()
    status = live_server.get("/v1/models").json()["models"][0]
    assert status["model"] == "shop" and status["window"]["samples"] == 60
    assert status["versions"]["v1"]["predictions"] == 60
    assert status["last_evaluation"]["samples"] == 60
    assert set(status["features"]) == {"age", "income", "visits", "plan", "country"}


def test_wrong_method_and_route_are_json_errors(live_server):
    assert live_server.get("/v1/predictions").status_code == 405
    r = live_server.get("/nope")
    assert r.status_code == 404 and "error" in r.json()


def test_bearer_token_is_required_when_configured(small_baseline):
    for server in serve(Service(make_config(), {"shop": small_baseline}), token="s3cret"):
        body = {"model": "shop", "records": rows(1)}
        assert server.post("/v1/predictions", body).status_code == 401
        assert server.post("/v1/predictions", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert server.post("/v1/predictions", body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert server.get("/metrics").status_code == 200


def test_kserve_cloudevents_are_joined_and_ingested(tmp_path):
    from exporter.baseline import build_baseline
    from exporter.config import ModelConfig

    rng = np.random.default_rng(0)
    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    train = pd.DataFrame({n: rng.normal(4, 1, 500) for n in names})
    train["pred"] = rng.choice([0, 1, 2], 500)
    baseline = build_baseline(train, "sklearn-iris", prediction="pred", categorical=("pred",))
    config = make_config(ModelConfig(name="sklearn-iris", feature_names=names))
    request = fixture("kserve/v1_request_body.json").read_bytes()
    response = fixture("kserve/v1_response_body.json").read_bytes()
    headers = {"ce-specversion": "1.0", "ce-id": "5bb2e4f5-10ca-4bbc-9c9b-3c9fcc0b2ae6",
               "ce-source": "http://localhost:9081/", "ce-inferenceservicename": "sklearn-iris",
               "Content-Type": "application/json"}
    for server in serve(Service(config, {"sklearn-iris": baseline})):
        first = requests.post(server.url + "/v1/events", data=request, timeout=5, headers={
            **headers, "ce-type": "org.kubeflow.serving.inference.request"})
        assert first.status_code == 202 and first.json() == {"ingested": 0, "pending": 1}
        second = requests.post(server.url + "/v1/events", data=response, timeout=5, headers={
            **headers, "ce-type": "org.kubeflow.serving.inference.response"})
        assert second.json()["ingested"] == 2
        assert metric(server, "mlmon_predictions_total", model="sklearn-iris") == 2
        assert metric(server, "mlmon_prediction_class_total", model="sklearn-iris", **{"class": "1"}) == 2
        assert metric(server, "mlmon_unknown_features_total", model="sklearn-iris") == 0
        bad = requests.post(server.url + "/v1/events", data=b"{}", timeout=5,
                            headers={**headers, "ce-type": "com.example.other"})
        assert bad.status_code == 400 and bad.json()["field"] == "ce-type"
