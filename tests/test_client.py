"""MlmonClient against a real sidecar, a dead one and a hung one; the decorator and middleware."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import metric, wait_for
from stack import free_port

from exporter.client import MlmonClient
from exporter.middleware import ASGIMiddleware, WSGIMiddleware, monitored

ROOT = Path(__file__).resolve().parents[1]


def features(i: int = 0) -> dict[str, Any]:
    return {"age": 30.0 + i % 10, "income": 1e4, "visits": 2, "plan": "basic", "country": "de"}


@pytest.fixture
def hung_sidecar() -> Iterator[str]:
    """Accepts connections and never answers (nor reads)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def call_times(client: MlmonClient, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        client.record(features(i), "yes", latency_seconds=0.01)
        out[i] = time.perf_counter() - t0
    return out


def assert_never_blocked(times: np.ndarray) -> None:
    """No call waits on the network: 99 % under 1 ms, and none near a socket timeout. (A stricter
    max would measure the shared 2-core machine's scheduler and the GIL, not the client.)"""
    assert np.quantile(times, 0.99) < 1e-3, f"p99 {np.quantile(times, 0.99) * 1e3:.3f} ms"
    assert times.max() < 0.05, f"max {times.max() * 1e3:.1f} ms"


# ---- delivery and truthful counts ---------------------------------------------------------------

def test_every_value_type_is_sent_or_refused_per_record(live_server):
    client = MlmonClient(live_server.url, "shop", "v1", flush_interval=0.05)
    odd = {"age": np.float32(41.5), "income": Decimal("12000.50"), "visits": np.int64(3), "plan": "pro",
           "country": None}
    assert client.record(odd, np.str_("yes"), latency_seconds=np.float64(0.01))
    assert client.record({**features(), "age": pd.NA, "visits": np.array([1])[0]}, "no")
    assert client.record({**features(), "seen": pd.Timestamp("2024-01-01"), "at": dt.date(2024, 1, 1),
                          "tags": {"a"}, "vec": np.array([1.0, 2.0])}, "no")
    assert not client.record({**features(), "age": object()}, "yes")      # no JSON for it: refused alone
    assert client.record(features(), "yes")
    wait_for(lambda: client.stats()["sent"] == 4)
    stats = client.close(timeout=2)
    assert (stats["sent"], stats["unserialisable"], stats["failed"], stats["dropped"]) == (4, 1, 0, 0)
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v1") == 4
    assert metric(live_server, "mlmon_client_records_lost_total", model="shop", reason="unserialisable") == 1


def test_records_are_copied_at_call_time(live_server):
    client = MlmonClient(live_server.url, "shop", "v1", flush_interval=0.05)
    rec = features()
    rec["plan"] = "pro"
    client.record(rec, "yes")
    rec["plan"] = "basic"                                                  # mutated after the call
    client.close(timeout=2)
    assert metric(live_server, "mlmon_feature_bin_total", model="shop", feature="plan", bin="pro") == 1
    assert metric(live_server, "mlmon_feature_bin_total", model="shop", feature="plan", bin="basic") in (None, 0)


def test_full_queue_drops_are_counted_and_visible_in_metrics(live_server):
    client = MlmonClient(live_server.url, "shop", "v1", max_queue=10, flush_interval=3600)
    results = [client.record(features(i), "yes") for i in range(25)]
    assert results.count(False) == 15
    stats = client.close(timeout=5)
    assert (stats["sent"], stats["dropped"], stats["failed"]) == (10, 15, 0)
    assert metric(live_server, "mlmon_client_records_lost_total", model="shop", reason="dropped") == 15


def test_dead_sidecar_never_blocks_and_counts_the_loss():
    client = MlmonClient(f"http://127.0.0.1:{free_port()}", "shop", flush_interval=0.05, max_queue=5_000)
    times = call_times(client, 3_000)
    assert_never_blocked(times)
    t0 = time.monotonic()
    stats = client.close(timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    assert stats["sent"] == 0 and stats["failed"] + stats["dropped"] == 3_000 and stats["failed"] > 0


def test_hung_sidecar_close_returns_within_its_deadline(hung_sidecar: str):
    client = MlmonClient(hung_sidecar, "shop", flush_interval=0.05, timeout=5.0, max_queue=2_000)
    times = call_times(client, 3_000)                      # the sender is stuck in its first post
    assert_never_blocked(times)
    t0 = time.monotonic()
    stats = client.close(timeout=1.0)
    assert time.monotonic() - t0 < 1.5                     # not the 5 s socket timeout
    assert stats["sent"] == 0
    assert stats["dropped"] >= 1_000                       # queue bound, then unsent at the deadline
    assert stats["dropped"] + stats["failed"] + stats["queued"] <= 3_000


SCRIPT = """
import sys
from exporter.client import MlmonClient
client = MlmonClient(sys.argv[1], "shop", "v1", flush_interval=3600, close_timeout=5)
for i in range(1000):
    client.record({"age": 30.0 + i % 7, "income": 1e4, "visits": 1, "plan": "basic", "country": "de"}, "yes")
# no close(): the interpreter-exit flush delivers
"""


def test_records_are_flushed_at_interpreter_exit(live_server):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), live_server.url], cwd=ROOT,
                          timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v1") == 1000


def test_interpreter_exit_against_a_hung_sidecar_is_bounded(hung_sidecar: str):
    script = SCRIPT.replace("close_timeout=5", "close_timeout=1")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), hung_sidecar], cwd=ROOT, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 10                     # interpreter start-up + the 1 s deadline


# ---- decorator and middleware ----------------------------------------------------------------------

def test_decorator_times_and_records_calls_and_failures(live_server):
    client = MlmonClient(live_server.url, "shop", "v1", flush_interval=0.05)

    @monitored(client)
    def predict(row: dict[str, Any]) -> str:
        if row["visits"] < 0:
            raise ValueError("bad input")
        time.sleep(0.02)
        return "yes"

    assert predict(features()) == "yes"
    with pytest.raises(ValueError, match="bad input"):
        predict({**features(), "visits": -1})
    client.close(timeout=2)
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v1") == 2
    assert metric(live_server, "mlmon_prediction_errors_total", model="shop", version="v1") == 1
    assert metric(live_server, "mlmon_prediction_latency_seconds_bucket", model="shop", version="v1",
                  le="0.01") == 1                          # the failure was fast, the 20 ms call was not


def wsgi_model(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
    if not body["instances"]:
        start_response("500 Internal Server Error", [("Content-Type", "application/json")])
        return [b'{"error": "empty"}']
    preds = ["yes" if r["age"] > 35 else "no" for r in body["instances"]]
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Model", "m1")])
    return [b'{"predictions": ', json.dumps(preds).encode(), b"}"]


def test_wsgi_middleware_passes_through_and_records(live_server):
    from werkzeug.test import Client

    client = MlmonClient(live_server.url, "shop", "v1", flush_interval=0.05)
    plain, wrapped = Client(wsgi_model), Client(WSGIMiddleware(wsgi_model, client))
    body = {"instances": [features(0), features(8)]}
    a, b = plain.post("/v1/models/m:predict", json=body), wrapped.post("/v1/models/m:predict", json=body)
    assert (a.status, a.get_data(), a.headers["X-Model"]) == (b.status, b.get_data(), b.headers["X-Model"])
    c = wrapped.post("/v1/models/m:predict", json={"instances": []})
    assert c.status_code == 500
    for response in (a, b, c):
        response.close()                                   # as every WSGI server does: the record is made then
    client.close(timeout=2)
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v1") == 2
    assert metric(live_server, "mlmon_prediction_class_total", model="shop", version="v1", **{"class": "yes"}) == 1


def test_asgi_middleware_passes_through_and_records(live_server):
    client = MlmonClient(live_server.url, "shop", "v1", flush_interval=0.05)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rows = json.loads(body)["instances"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"predictions": ', "more_body": True})
        await send({"type": "http.response.body", "body": json.dumps(["no"] * len(rows)).encode() + b"}"})

    async def call(target: Any) -> list[dict[str, Any]]:
        payload = json.dumps({"instances": [features(1)] * 3}).encode()
        chunks = [{"type": "http.request", "body": payload[:10], "more_body": True},
                  {"type": "http.request", "body": payload[10:], "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return chunks.pop(0)

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        await target({"type": "http", "method": "POST", "path": "/predict"}, receive, send)
        return sent

    assert asyncio.run(call(app)) == asyncio.run(call(ASGIMiddleware(app, client)))
    client.close(timeout=2)
    assert metric(live_server, "mlmon_predictions_total", model="shop", version="v1") == 3
