"""The fast ingest paths give exactly what the general paths give.

- The plain-WSGI POST path in front of Flask answers every request as the Flask routes do.
- The row form, columnar-first since issue 12, refuses and keeps the same records as the columnar
  form of the same data.
- The C-level whole-column checks of numeric and categorical values agree with the value-by-value
  path they short-cut.
"""

from __future__ import annotations

import gzip
import http.client
import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from helpers import make_config, metric, rows, serve
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from exporter.formats.native import parse_predictions
from exporter.profile import Baseline, CategoricalProfile
from exporter.quality import encode, numeric_values
from exporter.server import create_app
from exporter.service import Service

TOKEN = "s3cret-token"


def _requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """POSTs covering every reply of the ingest routes: accepted, partly refused, malformed,
    unknown model, wrong media type, missing token, gzip, too large, labels, events, client stats."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    good = json.dumps({"model": "shop", "version": "v1", "records": rows(20)}).encode()
    mixed = json.dumps({"model": "shop",
                        "records": [*rows(3), {"features": 1}, {"features": {}, "latency_seconds": -1}]})
    columnar = json.dumps({"model": "shop", "ids": ["a", "b"], "features": {"age": [1, "x"], "plan": ["pro", None]},
                           "predictions": ["yes", 3], "latency_seconds": [0.1, 2e5]})
    event_headers = {**auth, "Ce-Specversion": "1.0", "Ce-Id": "e-1", "Ce-Source": "http://m/",
                     "Ce-Type": "org.kubeflow.serving.inference.request", "Ce-Inferenceservicename": "shop"}
    return [
        ("/v1/predictions", good, auth),
        ("/v1/predictions", mixed.encode(), auth),
        ("/v1/predictions", columnar.encode(), auth),
        ("/v1/predictions", gzip.compress(good), {**auth, "Content-Encoding": "gzip"}),
        ("/v1/predictions", b'{"model": "shop", "records": [', auth),
        ("/v1/predictions", json.dumps({"model": "nope", "records": rows(2)}).encode(), auth),
        ("/v1/predictions", good, {**auth, "Content-Type": "text/plain"}),
        ("/v1/predictions", good, {"Content-Type": "application/json"}),
        ("/v1/predictions", good, {**auth, "Authorization": "Bearer wrong"}),
        ("/v1/predictions", b"x" * 70_000, auth),
        ("/v1/labels", json.dumps({"model": "shop", "ids": ["a", "zz"], "labels": ["yes", {"no": 1}]}).encode(), auth),
        ("/v1/events", json.dumps({"instances": [[1, 2]]}).encode(), event_headers),
        ("/v1/events", b"not json", event_headers),
        ("/v1/client-stats", json.dumps({"model": "shop", "client_id": "c1", "dropped": 2}).encode(), auth),
        ("/v1/client-stats", json.dumps({"model": "shop", "client_id": "c1", "dropped": -2}).encode(), auth),
    ]


def test_fast_post_path_answers_as_the_flask_routes_do(small_baseline: Baseline):
    """Each request goes once through the fast path and once straight to Flask, each against its
    own fresh sidecar: same status, same JSON, same counters afterwards."""
    replies: dict[str, list[tuple[int, Any]]] = {}
    exposition: dict[str, str] = {}
    for path_kind in ("fast", "flask"):
        service = Service(make_config(max_body_bytes=60_000), {"shop": small_baseline})
        app = create_app(service, TOKEN)
        wsgi = app.wsgi_app if path_kind == "fast" else app.wsgi_app.flask_app  # type: ignore[attr-defined]
        client = Client(wsgi)
        replies[path_kind] = []
        for path, body, headers in _requests():
            r = client.post(path, data=body, headers=headers)
            replies[path_kind].append((r.status_code, r.get_json()))
        service.flush_events()
        exposition[path_kind] = Client(app).get("/metrics").get_data(as_text=True)
    assert replies["fast"] == replies["flask"]
    assert {200, 202, 400, 401, 404, 413, 415} <= {status for status, _ in replies["fast"]}

    def counters(text: str) -> list[str]:
        return sorted(line for line in text.splitlines()
                      if line.startswith("mlmon_") and "_created" not in line and "seconds" not in line
                      and "age" not in line)

    assert counters(exposition["fast"]) == counters(exposition["flask"])


def test_a_chunked_body_is_served_by_the_general_path(small_baseline: Baseline):
    """No Content-Length (chunked transfer): the fast path leaves it to Flask, which counts it."""
    for live in serve(Service(make_config(), {"shop": small_baseline})):
        body = json.dumps({"model": "shop", "version": "v9", "records": rows(7)}).encode()
        conn = http.client.HTTPConnection(live.url.removeprefix("http://"), timeout=10)
        conn.putrequest("POST", "/v1/predictions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 100):
            chunk = body[i:i + 100]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        reply = conn.getresponse()
        assert reply.status == 200, reply.read()
        assert json.loads(reply.read())["accepted"] == 7
        assert metric(live, "mlmon_predictions_total", model="shop", version="v9") == 7


# ---- row form == columnar form -------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["a", "b", "x1"]), st.just({"k": 1}), st.just([1]))
_FIELDS = {
    "ids": st.one_of(st.none(), st.text(max_size=3), st.integers(0, 9), st.just("i" * 300), st.just([1])),
    "predictions": _VALUES,
    "latency_seconds": st.one_of(st.none(), st.floats(-1, 2e5), st.integers(-1, 3), st.booleans(), st.just("1")),
    "errors": st.one_of(st.none(), st.booleans(), st.just("timeout"), st.integers(0, 2)),
}
_ROW_NAME = {"ids": "id", "predictions": "prediction", "latency_seconds": "latency_seconds", "errors": "error"}


@st.composite
def _payloads(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(["f1", "f2", "f3"]), unique=True, max_size=3))
    features = {name: draw(st.lists(_VALUES, min_size=n, max_size=n)) for name in names}
    columns = {key: draw(st.lists(strategy, min_size=n, max_size=n)) for key, strategy in _FIELDS.items()}
    records = [{"features": {name: features[name][i] for name in names},
                **{_ROW_NAME[key]: columns[key][i] for key in columns}} for i in range(n)]
    base = {"model": "m", "version": "v"}
    return {**base, "records": records}, {**base, "features": features, **columns}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(_payloads())
def test_row_and_columnar_forms_of_the_same_data_agree(payloads: tuple[dict[str, Any], dict[str, Any]]):
    row_payload, column_payload = payloads
    if not column_payload["features"]:  # without features the columnar batch size comes from ids alone
        return
    by_rows, by_columns = parse_predictions(row_payload), parse_predictions(column_payload)
    assert by_rows.size == by_columns.size
    assert [r.index for r in by_rows.rejected] == [r.index for r in by_columns.rejected]
    assert [r.reason for r in by_rows.rejected] == [r.reason for r in by_columns.rejected]
    for r in by_rows.rejected:  # the same field, named the way each form names it
        key = next(k for k, row_name in _ROW_NAME.items() if r.field.endswith(f".{row_name}"))
        assert f"{key}[{r.index}]" in {c.field for c in by_columns.rejected}
    # the row form names the features of its kept records; every generated record has them all
    assert set(by_rows.features) == (set(by_columns.features) if by_rows.size else set())
    for name in by_rows.features:
        assert _same(by_rows.features[name], by_columns.features[name])
    assert _same(by_rows.predictions, by_columns.predictions)
    assert by_rows.ids == by_columns.ids
    np.testing.assert_array_equal(by_rows.latency_seconds, by_columns.latency_seconds)
    np.testing.assert_array_equal(by_rows.error, by_columns.error)


# ---- whole-column checks == value-by-value -------------------------------------------------

@pytest.mark.parametrize("column", [
    [1.5, 2, True, 3],
    [1.5, None, 2.0],
    [1.0, "2", 3.0],
    [1.0, 10**400, 2.0],
    [1.0, complex(1, 1)],
    [np.float32(1.5), np.int64(3), 2.0],
    [1.0, Decimal("2.5")],
    [1.0, Fraction(1, 2)],
    [{"a": 1}, [1], 2.0],
    [float("nan"), float("inf"), -float("inf"), 0.0],
])
def test_numeric_fast_path_agrees_with_the_value_by_value_path(column: list[Any]):
    """The slow path is forced by a trailing string; the first n results must not change."""
    values, missing, wrong = numeric_values(column)
    slow_values, slow_missing, slow_wrong = (a[:-1] for a in numeric_values([*column, "force the slow path"]))
    np.testing.assert_array_equal(values, slow_values)
    np.testing.assert_array_equal(missing, slow_missing)
    np.testing.assert_array_equal(wrong, slow_wrong)


@pytest.mark.parametrize("column", [
    ["basic", "pro", "zzz"],
    ["basic", None, "pro"],
    ["basic", 1, 1.0, True, "1"],
    ["basic", {"a": 1}, ["pro"]],
    [np.str_("pro"), "plus"],
    [],
])
def test_categorical_fast_path_agrees_with_the_value_by_value_path(small_baseline: Baseline, column: list[Any]):
    profile = small_baseline.features["plan"]
    assert isinstance(profile, CategoricalProfile)
    fast = encode(profile, column)
    slow = encode(profile, tuple(column))  # not a list: always value by value
    np.testing.assert_array_equal(fast.bins, slow.bins)
    assert (fast.missing, fast.type_errors, fast.unexpected) == (slow.missing, slow.type_errors, slow.unexpected)
