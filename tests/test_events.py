"""EventJoiner: pairing logged requests and responses into Batches, with a TTL and a bound."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from helpers import PAYLOAD_ROOTS, curl_events, fixture, iso_seconds, use_payload_root

from exporter.batch import Batch, PayloadError
from exporter.batch import prediction_problem as check_prediction
from exporter.config import EventsConfig
from exporter.events import EventJoiner
from exporter.formats import InferenceEvent, decode_event


@pytest.fixture(params=PAYLOAD_ROOTS, autouse=True)
def payload_root(request: pytest.FixtureRequest) -> Any:
    """Run the test once per payload directory (ours always, the shared captures when present)."""
    use_payload_root(request.param)
    yield request.param
    use_payload_root(PAYLOAD_ROOTS[0].values[0])

IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
_EVENT_MARKER = "☁️  cloudevents.Event".encode()


def kserve_events(received_at: float = 1000.0) -> tuple[InferenceEvent, InferenceEvent]:
    """The request/response pair of KServe's logger sample (knative event_display capture)."""
    events = []
    for chunk in fixture("kserve/v1_logger_event_display.txt").read_bytes().split(_EVENT_MARKER)[1:]:
        head, _, data = chunk.partition(b"\nData,\n")
        headers = {}
        for line in head.decode().splitlines():
            if line.startswith("  ") and ":" in line:
                key, _, value = line.strip().partition(":")
                headers["Content-Type" if key == "datacontenttype" else f"ce-{key}"] = value.strip()
        events.append(decode_event(headers, data, received_at + len(events) * 0.01))
    return events[0], events[1]


def seldon_capture(received_at: float = 1000.0) -> tuple[InferenceEvent, InferenceEvent]:
    """The Seldon v1 executor's request/response pair as received by an http-echo sink."""
    text = fixture("seldon/v1_logger_http_echo_capture.txt").read_text()
    docs = [json.JSONDecoder().raw_decode(c.strip())[0] for c in text.split("-----------------")[1:]]
    req, resp = (decode_event(d["headers"], d["body"].encode(), received_at) for d in docs)
    return req, resp


def seldon_test_events(received_at: float = 1000.0) -> list[InferenceEvent]:
    """Seldon request-logger's hand-made test events (curl lines)."""
    return [decode_event(headers, body, received_at)
            for headers, body in curl_events("seldon/v1_request_logger_test_events.txt")]



def event(kind: str, id: str, body: Any, at: float, model: str | None = "m", **kw: Any) -> InferenceEvent:
    return InferenceEvent(id=id, kind=kind, model=model, version=kw.pop("version", None), body=body,
                          received_at=at, **kw)


def joiner_with(**config: Any) -> EventJoiner:
    return EventJoiner(EventsConfig(**config))


def records(batches: list[Batch]) -> int:
    return sum(b.size for b in batches)


# ---- joining ------------------------------------------------------------------------------

def test_request_then_response():
    req, resp = kserve_events()
    joiner = EventJoiner(feature_names={"sklearn-iris": IRIS})
    assert joiner.add(req) == []
    assert joiner.pending == 1
    (batch,) = joiner.add(resp)
    assert (batch.model, batch.version, batch.size) == ("sklearn-iris", "unknown", 2)
    assert batch.features["sepal_length"] == [6.8, 6.0] and batch.features["petal_width"] == [1.4, 1.6]
    assert batch.predictions == [1, 1]
    assert batch.ids == [f"{req.id}:0", f"{req.id}:1"]
    latency = iso_seconds(resp.attributes["time"]) - iso_seconds(req.attributes["time"])
    assert batch.latency_seconds == pytest.approx([latency] * 2, abs=1e-6)   # ce-time difference
    assert not batch.error.any()
    assert joiner.pending == 0
    assert joiner.stats()["sklearn-iris"]["paired"] == 1


def test_response_then_request():
    req, resp = kserve_events()
    joiner = EventJoiner()
    assert joiner.add(resp) == []
    (batch,) = joiner.add(req)
    assert batch.predictions == [1, 1] and list(batch.features) == ["f0", "f1", "f2", "f3"]
    assert joiner.stats()["sklearn-iris"]["orphan_response"] == 0


def test_seldon_pair_joins_on_requestid_single_row():
    req, resp = seldon_capture()
    joiner = EventJoiner()
    joiner.add(req)
    (batch,) = joiner.add(resp)
    assert batch.model == req.attributes["inferenceservicename"] and batch.size == 1
    assert batch.ids == [req.attributes["requestid"]]                      # single record: bare id
    assert batch.features == {"f0": [1], "f1": [2], "f2": [5]}
    assert batch.predictions == [0.43782349911420193]
    latency = iso_seconds(resp.attributes["time"]) - iso_seconds(req.attributes["time"])
    assert latency > 0 and batch.latency_seconds[0] == pytest.approx(latency, abs=1e-6)


def test_n_rows_give_n_records():
    events = seldon_test_events()
    joiner = EventJoiner()
    tensor = joiner.add(events[0]) + joiner.add(events[1])
    ndarray = joiner.add(events[2]) + joiner.add(events[3])
    income = joiner.add(events[4]) + joiner.add(events[5])
    assert [b.size for b in tensor + ndarray + income] == [2, 2, 1]
    assert tensor[0].features == {"a": [1, 3], "b": [2, 4]} and tensor[0].predictions == [5, 6]
    assert tensor[0].ids == [f"{events[0].id}:0", f"{events[0].id}:1"]
    assert ndarray[0].predictions == [7, 8]
    t0, t1 = events[5].body["data"]["ndarray"][0]
    assert income[0].predictions == [{"t:0": t0, "t:1": t1}]
    assert np.isnan(tensor[0].latency_seconds).all()                       # no ce-time sent


def test_missing_response_emits_features_after_ttl():
    iris = seldon_test_events(received_at=50.0)[6]                          # never answered
    joiner = joiner_with(ttl_seconds=60)
    assert joiner.add(iris) == []
    assert joiner.flush(now=109.9) == []
    (batch,) = joiner.flush(now=110.0)
    assert batch.model == "iris" and batch.size == 2 and batch.predictions is None
    assert batch.features["Sepal length"] == [6.8, 6.1]
    assert batch.ids == [f"{iris.id}:0", f"{iris.id}:1"]
    assert joiner.stats()["iris"]["unanswered"] == 1 and joiner.pending == 0


def test_orphan_response_is_counted_and_dropped():
    _, resp = kserve_events(received_at=0.0)
    joiner = joiner_with(ttl_seconds=5)
    assert joiner.add(resp) == []
    assert joiner.flush(now=100.0) == []
    assert joiner.stats()["sklearn-iris"]["orphan_response"] == 1 and joiner.pending == 0


def test_expiry_also_happens_on_add():
    joiner = joiner_with(ttl_seconds=1)
    joiner.add(event("request", "a", {"instances": [[1]]}, at=0.0))
    out = joiner.add(event("request", "b", {"instances": [[2]]}, at=5.0))
    assert [b.ids for b in out] == [["a"]] and joiner.pending == 1


def test_bound_respected_under_twice_capacity():
    cap = 50
    joiner = joiner_with(max_pending=cap, ttl_seconds=1e9)
    emitted = []
    for i in range(2 * cap):
        emitted += joiner.add(event("request", f"r{i}", {"instances": [[i, i + 1]]}, at=float(i)))
        assert joiner.pending <= cap
    assert joiner.pending == cap
    assert records(emitted) == cap                                  # the oldest were let go, features kept
    assert emitted[0].ids[0] == "r0"
    for i in range(2 * cap):
        joiner.add(event("response", f"x{i}", {"predictions": [1]}, at=1000.0 + i))
        assert joiner.pending <= cap
    stats = joiner.stats()["m"]
    assert stats["evicted_request"] == 2 * cap and stats["evicted_response"] == cap


def test_pairs_still_join_near_capacity():
    joiner = joiner_with(max_pending=3)
    out = []
    for i in range(10):
        out += joiner.add(event("request", str(i), {"instances": [[i]]}, at=i))
        out += joiner.add(event("response", str(i), {"predictions": [i * 10]}, at=i + 0.5))
    assert [b.predictions for b in out] == [[i * 10] for i in range(10)]


def test_row_mismatch_keeps_features_without_predictions():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"instances": [[1], [2]]}, at=0))
    (batch,) = joiner.add(event("response", "a", {"predictions": [1, 2, 3]}, at=0))
    assert batch.size == 2 and batch.predictions is None
    assert joiner.stats()["m"]["row_mismatch"] == 1


def test_error_response_marks_records_failed():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"data": {"ndarray": [[1, 2]]}}, at=0))
    failure = {"status": {"code": 500, "info": "boom", "status": "FAILURE"}}
    (batch,) = joiner.add(event("response", "a", failure, at=0))
    assert batch.error.tolist() == [True] and batch.predictions is None
    assert joiner.stats()["m"]["error_response"] == 1


def test_bad_prediction_keeps_that_records_features_without_prediction():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"instances": [[1], [2], [3]]}, at=0))
    batch, unusable = joiner.add(event("response", "a", {"predictions": [0.5, [[1, 2], [3, 4]], 0.7]}, at=0))
    assert batch.size == 2 and batch.predictions == [0.5, 0.7] and batch.ids == ["a:0", "a:2"]
    assert batch.features == {"f0": [1, 3]}
    assert unusable.ids == ["a:1"] and unusable.features == {"f0": [2]} and unusable.predictions is None
    assert joiner.stats()["m"]["invalid_prediction"] == 1


def test_version_from_oip_response_never_inherited_by_another_request():
    joiner = joiner_with(ttl_seconds=10)
    req = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    resp = {"model_version": "v7", "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}]}
    joiner.add(event("request", "a", req, at=0))
    (batch,) = joiner.add(event("response", "a", resp, at=0, version="v7"))
    assert batch.version == "v7"
    joiner.add(event("request", "b", req, at=1))
    (late,) = joiner.flush(now=100)
    assert late.version == "unknown" and late.predictions is None


def test_redelivered_request_is_a_duplicate_and_the_first_is_kept():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"instances": [[1]]}, at=0))
    assert joiner.add(event("request", "a", {"instances": [[1]]}, at=1)) == []
    (pair,) = joiner.add(event("response", "a", {"predictions": [9]}, at=2))
    assert pair.features == {"f0": [1]} and pair.predictions == [9] and pair.size == 1
    assert joiner.stats()["m"]["duplicate"] == 1 and joiner.stats()["m"]["paired"] == 1


def test_components_are_paired_separately():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"instances": [[1]]}, at=0, component="transformer"))
    assert joiner.add(event("response", "a", {"predictions": [1]}, at=0, component="predictor")) == []
    assert joiner.pending == 2


def test_flush_coalesces_per_model_and_version():
    joiner = joiner_with(ttl_seconds=1)
    for i in range(5):
        joiner.add(event("request", str(i), {"instances": [{"a": i}] if i % 2 else [{"b": i}]}, at=0))
    (batch,) = joiner.flush(now=10)
    assert batch.size == 5 and batch.ids == ["0", "1", "2", "3", "4"]
    assert batch.features == {"b": [0, None, 2, None, 4], "a": [None, 1, None, 3, None]}
    assert len(batch.latency_seconds) == len(batch.error) == 5


def test_unreadable_event_is_refused_and_not_kept():
    joiner = EventJoiner()
    with pytest.raises(PayloadError) as info:
        joiner.add(event("request", "a", {"foo": 1}, at=0))
    assert info.value.field == "body" and joiner.pending == 0


def test_event_without_model_needs_a_default():
    with pytest.raises(PayloadError) as info:
        EventJoiner().add(event("request", "a", {"instances": [[1]]}, at=0, model=None))
    assert info.value.field == "ce-inferenceservicename"
    joiner = joiner_with(default_model="mnist", ttl_seconds=1)
    joiner.add(event("request", "a", {"instances": [[1]]}, at=0, model=None))
    assert joiner.flush(now=5)[0].model == "mnist"


def test_positional_width_mismatch_from_model_config():
    joiner = EventJoiner(feature_names=lambda model: IRIS[:2])
    with pytest.raises(PayloadError) as info:
        joiner.add(event("request", "a", {"instances": [[1, 2, 3]]}, at=0))
    assert info.value.field == "instances" and "3 values" in info.value.reason


def test_drain_lets_everything_go():
    joiner = EventJoiner()
    joiner.add(event("request", "a", {"instances": [[1]]}, at=0))
    joiner.add(event("response", "b", {"predictions": [1]}, at=0))
    assert records(joiner.drain()) == 1 and joiner.pending == 0


def test_thread_safety():
    joiner = joiner_with(max_pending=10_000)
    out: list[Batch] = []
    lock = threading.Lock()

    def work(start: int) -> None:
        local = []
        for i in range(start, start + 500):
            local += joiner.add(event("response", str(i), {"predictions": [i]}, at=0))
            local += joiner.add(event("request", str(i), {"instances": [[i]]}, at=0))
        with lock:
            out.extend(local)

    threads = [threading.Thread(target=work, args=(k * 500,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert records(out) == 4000 and joiner.pending == 0
    assert all(b.features["f0"] == b.predictions for b in out)
    assert joiner.stats()["m"]["paired"] == 4000


def test_check_prediction():
    assert check_prediction(1) is None and check_prediction("cat") is None
    assert check_prediction({"a": 0.2, "b": 0.8}) is None and check_prediction([0.2, 0.8]) is None
    assert check_prediction(float("nan")) is not None
    assert check_prediction({"a": "x"}) is not None
    assert check_prediction([[1]]) is not None
