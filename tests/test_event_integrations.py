"""Payload loggers as they really behave, through the HTTP API: at-least-once delivery, several
components per inference, canary endpoints, several outputs, Seldon class names and feedback,
failed inferences that arrive as lone requests, gzip — and every joiner outcome in /metrics."""

from __future__ import annotations

import gzip
import itertools
import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from helpers import make_config, shop_model
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score

from exporter.config import EventRoute, EventsConfig, config_from_dict
from exporter.events import OUTCOMES
from exporter.server import create_app
from exporter.service import Service

FEATURES = ("age", "income", "visits", "plan", "country")
_ids = itertools.count()


def row(i: int) -> dict[str, Any]:
    return {"age": 30.0 + i % 20, "income": 1e4 + i, "visits": i % 5, "plan": "basic", "country": "de"}


class Sidecar:
    """A Service and its Flask app, driven through HTTP requests without a socket."""

    def __init__(self, baseline: Any, events: EventsConfig | None = None) -> None:
        config = replace(make_config(shop_model()), events=events or EventsConfig())
        self.service = Service(config, {"shop": baseline})
        self.client = create_app(self.service).test_client()
        self.clock = 1000.0

    def send(self, kind: str, body: Any, *, id: str, server: str = "kserve", compress: bool = False,
             **attrs: str) -> Any:
        prefix = "org.kubeflow.serving.inference" if server == "kserve" else "io.seldon.serving.inference"
        etype = f"{prefix}.{kind}" if kind != "feedback" else "io.seldon.serving.feedback"
        headers = {"Ce-Specversion": "1.0", "Ce-Type": etype, "Ce-Source": "test", "Content-Type": "application/json"}
        if server == "kserve":
            headers["Ce-Id"] = id
            attrs.setdefault("inferenceservicename", "shop")
            attrs.setdefault("component", "predictor")
        else:
            headers["Ce-Id"] = f"own-{next(_ids)}"        # Seldon: one ce-id per event …
            headers["Ce-Requestid"] = id                  # … paired by the request id
            attrs.setdefault("inferenceservicename", "shop")
        headers.update({f"Ce-{k.capitalize()}": v for k, v in attrs.items()})
        data = json.dumps(body).encode()
        if compress:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        r = self.client.post("/v1/events", data=data, headers=headers)
        assert r.status_code in (202, 400), r.get_data(as_text=True)
        return r

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.client.get("/metrics").get_data(as_text=True)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def outcome(self, outcome: str, model: str = "shop") -> float:
        return self.value("mlmon_events_total", model=model, outcome=outcome)


@pytest.fixture
def sidecar(small_baseline: Any) -> Sidecar:
    return Sidecar(small_baseline)


def v1_pair(sidecar: Sidecar, id: str, rows: list[dict[str, Any]], preds: list[Any], **attrs: str) -> None:
    sidecar.send("request", {"instances": rows}, id=id, **attrs)
    sidecar.send("response", {"predictions": preds}, id=id, **attrs)


# ---- at-least-once delivery -----------------------------------------------------------------

def test_redelivered_event_and_redelivered_pair_count_once(sidecar: Sidecar):
    req, resp = {"instances": [row(1)]}, {"predictions": ["yes"]}
    sidecar.send("request", req, id="a")
    sidecar.send("request", req, id="a")                 # the same event twice
    sidecar.send("response", resp, id="a")
    sidecar.send("response", resp, id="a")               # … and its response twice, after pairing
    v1_pair(sidecar, "b", [row(2)], ["no"])
    v1_pair(sidecar, "b", [row(2)], ["no"])              # the whole pair delivered again
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 2
    assert sidecar.outcome("paired") == 2 and sidecar.outcome("duplicate") == 4
    assert sidecar.service.joiner.pending == 0


# ---- several components per inference ----------------------------------------------------------

def test_kserve_transformer_and_predictor_give_one_record(sidecar: Sidecar):
    raw = {"instances": [{"text": "raw input"}]}
    sidecar.send("request", raw, id="t1", component="transformer")
    sidecar.send("request", {"instances": [row(1)]}, id="t1")
    sidecar.send("response", {"predictions": ["yes"]}, id="t1")
    sidecar.send("response", {"predictions": ["yes"]}, id="t1", component="transformer")
    sidecar.send("request", {"instances": [row(1)]}, id="t1", component="explainer")
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 1
    assert sidecar.value("mlmon_unknown_features_total", model="shop") == 0   # the transformer's input is not a record
    assert sidecar.outcome("ignored_component") == 3 and sidecar.outcome("paired") == 1


def test_seldon_two_node_graph_routed_to_one_record(small_baseline: Any):
    routes = (EventRoute((("inference_service", "graph"), ("component", "classifier")), "shop"),)
    sidecar = Sidecar(small_baseline, EventsConfig(routes=routes))
    for i in range(3):
        rid = f"puid-{i}"
        node = {"server": "seldon", "inferenceservicename": "graph"}
        sidecar.send("request", {"data": {"ndarray": [["raw text"]]}}, id=rid, modelid="tokenizer", **node)
        sidecar.send("response", {"data": {"names": list(FEATURES), "ndarray": [list(row(i).values())]}},
                     id=rid, modelid="tokenizer", **node)
        sidecar.send("request", {"data": {"names": list(FEATURES), "ndarray": [list(row(i).values())]}},
                     id=rid, modelid="classifier", **node)
        sidecar.send("response", {"data": {"names": ["t:0"], "ndarray": [["yes"]]}}, id=rid, modelid="classifier",
                     **node)
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 3
    assert sidecar.value("mlmon_feature_missing_total", model="shop", feature="age") == 0
    assert sidecar.outcome("ignored_component") == 6 and sidecar.outcome("paired") == 3


# ---- versions ----------------------------------------------------------------------------------

def test_canary_endpoint_sets_the_version_never_inherited(small_baseline: Any):
    routes = (EventRoute((("inference_service", "shop"), ("endpoint", "canary")), "shop", "v2"),
              EventRoute((("inference_service", "shop"), ("endpoint", "default")), "shop", "v1"))
    sidecar = Sidecar(small_baseline, EventsConfig(routes=routes))
    for i in range(10):
        endpoint = "canary" if i % 3 == 0 else "default"
        v1_pair(sidecar, f"c{i}", [row(i)], ["yes"], endpoint=endpoint)
    # an OIP response naming its version wins over the route
    sidecar.send("request", {"instances": [row(99)]}, id="oip", endpoint="canary")
    sidecar.send("response", {"model_name": "shop", "model_version": "v3", "outputs": [
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["no"]}]}, id="oip", endpoint="canary")
    # no body version, no route: the default — not the last version seen
    v1_pair(sidecar, "plain", [row(5)], ["yes"], endpoint="")
    assert sidecar.value("mlmon_predictions_total", model="shop", version="v2") == 4
    assert sidecar.value("mlmon_predictions_total", model="shop", version="v1") == 6
    assert sidecar.value("mlmon_predictions_total", model="shop", version="v3") == 1
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 1


# ---- several outputs -----------------------------------------------------------------------------

LOGITS_FIRST = {"model_name": "shop", "outputs": [
    {"name": "logits", "shape": [2, 2], "datatype": "FP32", "data": [2.5, -1.0, -3.0, 4.0]},
    {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["no", "yes"]}]}
OIP_REQUEST = {"inputs": [{"name": n, "shape": [2], "datatype": "BYTES" if n in ("plan", "country") else "FP64",
                           "data": [row(0)[n], row(1)[n]]} for n in FEATURES]}


def test_logits_first_output_selected_by_name(small_baseline: Any):
    sidecar = Sidecar(small_baseline, EventsConfig(outputs={"shop": "label"}))
    sidecar.send("request", OIP_REQUEST, id="x")
    sidecar.send("response", LOGITS_FIRST, id="x")
    assert sidecar.value("mlmon_prediction_class_total", model="shop", version="unknown", **{"class": "yes"}) == 1
    assert sidecar.value("mlmon_prediction_class_total", model="shop", version="unknown", **{"class": "no"}) == 1
    assert sidecar.outcome("invalid_prediction") == 0


def test_logits_first_without_selection_keeps_features(sidecar: Sidecar):
    sidecar.send("request", OIP_REQUEST, id="x")
    sidecar.send("response", LOGITS_FIRST, id="x")
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 2   # features kept
    assert sidecar.outcome("invalid_prediction") == 2
    assert sidecar.value("mlmon_feature_missing_total", model="shop", feature="age") == 0


# ---- Seldon class names, feedback ---------------------------------------------------------------

def test_seldon_t_classes_mapped_accuracy_equals_sklearn(small_baseline: Any):
    sidecar = Sidecar(small_baseline, EventsConfig(classes={"shop": {"t:0": "no", "t:1": "yes"}}))
    rng = np.random.default_rng(3)
    truth, predicted = [], []
    for i in range(40):
        p_yes = float(rng.uniform())
        sidecar.send("request", {"data": {"names": list(FEATURES), "ndarray": [list(row(i).values())]}},
                     id=f"s{i}", server="seldon")
        sidecar.send("response", {"data": {"names": ["t:0", "t:1"], "ndarray": [[1 - p_yes, p_yes]]}},
                     id=f"s{i}", server="seldon")
        label = "yes" if rng.uniform() < 0.5 else "no"
        truth.append(label)
        predicted.append("yes" if p_yes > 0.5 else "no")
        r = sidecar.client.post("/v1/labels", json={"model": "shop", "id": f"s{i}", "label": label})
        assert r.json["matched"] == 1
    confusion = {(dict(k[1])["actual"], dict(k[1])["predicted"]): v for k, v in sidecar.metrics().items()
                 if k[0] == "mlmon_confusion_total"}
    assert "__other__" not in {p for _, p in confusion}
    ours = sum(v for (a, p), v in confusion.items() if a == p) / sum(confusion.values())
    assert ours == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)


def test_seldon_feedback_becomes_labels(small_baseline: Any):
    sidecar = Sidecar(small_baseline, EventsConfig(classes={"shop": ["no", "yes"]}))
    for i in range(4):
        sidecar.send("request", {"data": {"names": list(FEATURES), "ndarray": [list(row(i).values())]}},
                     id=f"f{i}", server="seldon")
        sidecar.send("response", {"data": {"names": ["t:0", "t:1"], "ndarray": [[0.2, 0.8]]},
                                  "meta": {"puid": f"f{i}"}}, id=f"f{i}", server="seldon")
    for i in range(4):
        feedback = {"request": {"meta": {"puid": f"f{i}"}}, "response": {"meta": {"puid": f"f{i}"}},
                    "truth": {"data": {"ndarray": [[i % 2]]}}, "reward": 1.0}
        r = sidecar.send("feedback", feedback, id=f"f{i}", server="seldon")
        assert r.status_code == 202 and r.json["matched"] == 1
    assert sidecar.value("mlmon_labels_total", model="shop") == 4
    assert sidecar.value("mlmon_confusion_total", model="shop", version="unknown", actual="yes", predicted="yes") == 2
    assert sidecar.value("mlmon_confusion_total", model="shop", version="unknown", actual="no", predicted="yes") == 2
    reward_only = {"response": {"meta": {"puid": "f0"}}, "reward": 0.0}
    r = sidecar.send("feedback", reward_only, id="f0", server="seldon")
    assert r.status_code == 400 and r.json["field"] == "truth"


# ---- failed inferences arrive as lone requests ---------------------------------------------------

@pytest.mark.parametrize("mode", ["error", "features_only"])
def test_lone_request_after_ttl_is_a_failed_inference_by_default(small_baseline: Any, mode: str):
    sidecar = Sidecar(small_baseline, EventsConfig(ttl_seconds=5, unanswered=mode))
    v1_pair(sidecar, "ok", [row(1)], ["yes"])
    sidecar.send("request", {"instances": [row(2), row(3)]}, id="failed")
    assert sidecar.service.joiner.pending == 1
    sidecar.service.ingest_batches(sidecar.service.joiner.flush(now=1e12))   # what the timer thread does
    failed = 2 if mode == "error" else 0
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 3
    assert sidecar.value("mlmon_prediction_errors_total", model="shop", version="unknown") == failed
    assert sidecar.value("mlmon_slo_bad_events_total", model="shop", slo="availability") == failed
    assert sidecar.outcome("unanswered") == 1


def test_configurable_ttl_accepts_a_late_response(small_baseline: Any):
    from exporter.events import EventJoiner
    from exporter.formats import InferenceEvent

    joiner = EventJoiner(EventsConfig(ttl_seconds=300))
    req = InferenceEvent("z", "request", "m", None, {"instances": [[1]]}, received_at=0.0)
    resp = InferenceEvent("z", "response", "m", None, {"predictions": [1]}, received_at=200.0)
    assert joiner.add(req) == []
    (batch,) = joiner.add(resp)                                  # 200 s later: past the old fixed 60 s
    assert batch.predictions == [1] and not batch.error.any()


# ---- gzip, buffering bounds, unknown models ------------------------------------------------------

def test_gzip_event_bodies(sidecar: Sidecar):
    sidecar.send("request", {"instances": [row(1)]}, id="g", compress=True)
    sidecar.send("response", {"predictions": ["yes"]}, id="g", compress=True)
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 1
    # Loggers send Content-Type: application/json; a POST without one is refused (415, server.py).
    headers = {"Ce-Type": "org.kubeflow.serving.inference.request", "Ce-Id": "m", "Ce-Inferenceservicename": "shop",
               "Content-Type": "application/json"}
    magic_only = sidecar.client.post("/v1/events", data=gzip.compress(b'{"instances": [[1, 2]]}'), headers=headers)
    assert magic_only.status_code == 202                          # no Content-Encoding: detected by magic bytes
    broken = sidecar.client.post("/v1/events", data=b"\x1f\x8bnot gzip", headers=headers)
    assert broken.status_code == 400 and broken.json["field"] == "body"


def test_unconfigured_model_is_counted_and_never_buffered(sidecar: Sidecar):
    for i in range(50):
        sidecar.send("request", {"instances": [row(i)]}, id=f"u{i}", inferenceservicename="someone-else")
    assert sidecar.service.joiner.pending == 0
    assert sidecar.outcome("unknown_model", model="__unknown__") == 50


def test_byte_cap_bounds_buffered_halves(small_baseline: Any):
    sidecar = Sidecar(small_baseline, EventsConfig(max_pending_bytes=20_000))
    for i in range(200):
        sidecar.send("request", {"instances": [row(i)] * 5}, id=f"b{i}")
        assert sidecar.service.joiner.pending_bytes <= 20_000
    assert sidecar.outcome("evicted_request") > 0
    assert sidecar.value("mlmon_events_pending_bytes") <= 20_000
    # evicted requests keep their features (as unanswered records)
    assert sidecar.value("mlmon_predictions_total", model="shop", version="unknown") == 5 * sidecar.outcome(
        "evicted_request")


# ---- every outcome in /metrics -------------------------------------------------------------------

def test_every_joiner_outcome_is_a_labelled_counter(small_baseline: Any):
    sidecar = Sidecar(small_baseline, EventsConfig(ttl_seconds=5, max_pending=3))
    v1_pair(sidecar, "p", [row(1)], ["yes"])                                        # paired
    v1_pair(sidecar, "p", [row(1)], ["yes"])                                        # duplicate ×2
    sidecar.send("request", {"instances": [row(1)]}, id="p", component="explainer")  # ignored_component
    sidecar.send("request", {"instances": [row(1)]}, id="q", inferenceservicename="nope")  # unknown_model
    v1_pair(sidecar, "r", [row(1), row(2)], ["yes"])                                 # row_mismatch
    sidecar.send("request", {"instances": [row(1)]}, id="e")
    sidecar.send("response", {"error": "model crashed"}, id="e")                    # error_response
    v1_pair(sidecar, "i", [row(1)], [[5.0, 7.0]])                                   # invalid_prediction
    for k in range(4):
        sidecar.send("request", {"instances": [row(k)]}, id=f"ev{k}")              # evicted_request
    sidecar.service.ingest_batches(sidecar.service.joiner.drain())                 # unanswered
    sidecar.send("response", {"predictions": ["no"]}, id="lonely")
    for k in range(4):
        sidecar.send("response", {"predictions": ["no"]}, id=f"er{k}")            # evicted_response
    sidecar.service.joiner.drain()                                                 # orphan_response
    seen = {dict(labels)["outcome"] for (name, labels) in sidecar.metrics()
            if name == "mlmon_events_total"}
    assert seen == set(OUTCOMES)
    for outcome in OUTCOMES:
        model = "__unknown__" if outcome == "unknown_model" else "shop"
        assert sidecar.outcome(outcome, model) > 0, outcome


def test_events_config_from_yaml_shape():
    config = config_from_dict({
        "models": [{"name": "shop"}],
        "events": {"ttl": "2m", "unanswered": "features_only", "components": ["predictor", "transformer"],
                   "routes": [{"match": {"inference_service": "shop", "endpoint": "canary"}, "model": "shop",
                               "version": "v2"}],
                   "outputs": {"shop": "label"}, "classes": {"shop": ["no", "yes"]}}})
    ev = config.events
    assert ev.ttl_seconds == 120 and ev.unanswered == "features_only" and ev.components == ("predictor", "transformer")
    assert ev.routes[0].version == "v2" and ev.outputs == {"shop": "label"}
    assert ev.classes["shop"]["t:1"] == "yes" and ev.classes["shop"]["0"] == "no"


def test_new_families_pass_promtool_check_metrics(small_baseline: Any):
    import subprocess

    from helpers import require_tool

    from exporter.proxy import ProxyStats

    promtool = require_tool("promtool")
    sidecar = Sidecar(small_baseline)
    v1_pair(sidecar, "p", [row(1)], ["yes"])
    sidecar.send("request", {"instances": [row(1)]}, id="q", inferenceservicename="nope")
    r = sidecar.client.post("/v1/client-stats", json={"model": "shop", "client_id": "c1", "dropped": 3})
    assert r.status_code == 200
    proxy = ProxyStats()
    proxy.request("shop", "5xx")
    proxy.monitor_event("queue_full")
    sidecar.service.proxy_stats = proxy.snapshot
    text = sidecar.client.get("/metrics").get_data(as_text=True)
    for family in ("mlmon_events_total", "mlmon_events_pending", "mlmon_client_records_lost_total",
                   "mlmon_proxy_requests_total", "mlmon_proxy_unmonitored_total"):
        assert f"\n{family}" in text, family
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_stats_reports_are_cumulative_and_validated(sidecar: Sidecar):
    def post(path: str, json: Any) -> Any:
        return sidecar.client.post(path, json=json)

    for report in ({"client_id": "a", "dropped": 5, "failed": 2}, {"client_id": "a", "dropped": 7, "failed": 2},
                   {"client_id": "b", "dropped": 1}):
        assert post("/v1/client-stats", json={"model": "shop", **report}).status_code == 200
    assert sidecar.value("mlmon_client_records_lost_total", model="shop", reason="dropped") == 8
    assert sidecar.value("mlmon_client_records_lost_total", model="shop", reason="failed") == 2
    for body, field in (({"model": "nope", "client_id": "a"}, "model"), ({"model": "shop"}, "client_id"),
                        ({"model": "shop", "client_id": "a", "dropped": -1}, "dropped"), ([1], "$")):
        r = post("/v1/client-stats", json=body)
        assert r.status_code == 400 and r.json["field"] == field


def test_joined_records_reach_the_monitor_without_a_scrape(small_baseline: Any):
    """Micro-batching: the evaluator thread ingests queued event records within ~100 ms."""
    import time

    sidecar = Sidecar(small_baseline)
    sidecar.service.start()
    try:
        v1_pair(sidecar, "m", [row(1), row(2)], ["yes", "no"])
        deadline = time.monotonic() + 5
        monitor = sidecar.service.monitors["shop"]
        while monitor.snapshot().versions.get("unknown") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert monitor.snapshot().versions["unknown"].predictions == 2
    finally:
        sidecar.service.stop()
