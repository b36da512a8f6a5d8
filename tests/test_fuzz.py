"""Issue 9: generated input never yields a 5xx and nothing accepted breaks a later read.

Schemathesis drives the live server from its own ``/openapi.json`` (a short run; ``bench/fuzz.py``
does 1,000 per POST endpoint), and hypothesis feeds arbitrary JSON values — lone surrogates,
integers beyond 64 bits and beyond float range, deep nesting — to every parser and the monitor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest
import requests
from helpers import make_config, require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from exporter.batch import PayloadError
from exporter.events import EventJoiner
from exporter.formats import decode_event, rows_from_event
from exporter.formats._common import load_json
from exporter.formats.native import parse_predictions
from exporter.limits import lenient_loads
from exporter.service import Service
from exporter.status import model_status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzz import check_reads, fuzz

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

huge_ints = st.sampled_from([2**64, -(2**70), 10**400, -(10**400)])
text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)  # includes surrogates
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(text, inner, max_size=4)), max_leaves=20)
names = st.one_of(st.sampled_from(["shop", "age", "plan", "v1"]), text)
record = st.fixed_dictionaries({"features": st.dictionaries(names, scalars, max_size=4)},
                               optional={"id": st.one_of(text, st.integers(), huge_ints), "prediction": json_values,
                                         "latency_seconds": scalars, "error": scalars,
                                         "groups": st.dictionaries(names, scalars, max_size=2)})
row_bodies = st.fixed_dictionaries({"model": st.just("shop"), "records": st.lists(record, max_size=5)},
                                   optional={"version": names})
column_bodies = st.fixed_dictionaries(
    {"model": st.just("shop"), "features": st.dictionaries(names, st.lists(scalars, min_size=3, max_size=3),
                                                           max_size=3)},
    # lengths vary on purpose: columns that disagree must be a 400, never an IndexError
    optional={"version": names, "predictions": st.lists(json_values, min_size=1, max_size=4),
              "ids": st.lists(st.one_of(text, st.integers(), huge_ints), min_size=1, max_size=4),
              "latency_seconds": st.lists(scalars, min_size=3, max_size=3)})


def _encode(value) -> bytes:
    """Serialise with the stdlib, which writes lone surrogates as \\ud800 escapes and huge integers."""
    return json.dumps(value, allow_nan=True).encode()


@pytest.fixture(scope="module")
def service(small_baseline) -> Service:
    return Service(make_config(), {"shop": small_baseline})


def _reads_still_work(service: Service) -> None:
    generate_latest(service.registry)
    orjson.dumps([model_status(m) for m in service.monitors.values()], option=orjson.OPT_SERIALIZE_NUMPY)


@SETTINGS
@given(body=st.one_of(row_bodies, column_bodies, json_values))
def test_native_parser_and_monitor_never_raise_anything_else(service, body):
    try:
        batch = parse_predictions(lenient_loads(_encode(body)))
    except PayloadError as exc:
        orjson.dumps({"error": str(exc), "field": exc.field})  # the 400 answer itself can be written
        return
    monitor = service.monitor(batch.model)
    if monitor is not None:
        result = monitor.ingest(batch)
        orjson.dumps([r.to_json() for r in result.rejected])
        ids = [i for i in (batch.ids or []) if i is not None]
        monitor.ingest_labels(ids, ["yes"] * len(ids))
    _reads_still_work(service)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=64), text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                     json_values.map(_encode)))
def test_json_loader_raises_only_payload_error(raw):
    try:
        load_json(raw)
    except PayloadError as exc:
        orjson.dumps({"error": str(exc)})


@SETTINGS
@given(data=json_values, model_version=names, kind=st.sampled_from(["request", "response"]))
def test_event_parsers_raise_only_payload_error(service, data, model_version, kind):
    doc = {"specversion": "1.0", "id": "e1", "source": "s", "type": f"org.kubeflow.serving.inference.{kind}",
           "inferenceservicename": "shop", "modelversion": model_version, "data": data}
    joiner = EventJoiner()
    try:
        event = decode_event({"content-type": "application/cloudevents+json"}, _encode(doc))
        rows_from_event(event)
        batches = joiner.add(event)
    except PayloadError as exc:
        orjson.dumps({"error": str(exc)})
        return
    service.ingest_batches(batches)
    _reads_still_work(service)


def test_schemathesis_short_run_no_5xx_and_reads_stay_valid(live_server):
    promtool = require_tool("promtool")
    assert promtool
    result = fuzz(live_server.url, examples=25)
    posts = {k: c for k, c in result.items() if k.startswith("POST")}
    spec = requests.get(live_server.url + "/openapi.json", timeout=10).json()
    n_posts = sum("post" in ops for ops in spec["paths"].values())
    assert n_posts >= 4 and len(posts) == 2 * n_posts  # every POST endpoint, positive and negative
    for key, codes in result.items():
        assert not [c for c in codes if c >= 500 or c == 0], (key, codes)
    assert sum(sum(c.values()) for c in posts.values()) >= 2 * n_posts * 20
    assert sum(v for c in posts.values() for k, v in c.items() if 200 <= k < 300) > 0  # some reached ingest
    reads = check_reads(live_server.url)
    assert reads["metrics"] == 200 and reads["models"] == 200
    assert reads["promtool"][0] == 0, reads["promtool"][1]
