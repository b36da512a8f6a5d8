"""``mlmon proxy`` in front of a real HTTP upstream: bytes pass through unchanged, errors and timeouts
are passed on and counted, streams stay streams, and serving survives a failing monitor."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import make_config, wait_for

from exporter.proxy import ProxyServer, build_proxy
from exporter.service import Service

FEATURES = ("age", "income", "visits", "plan", "country")


class Upstream(BaseHTTPRequestHandler):
    """A model server: KServe V1 and OIP V2 predict, a 500, a slow answer and a chunked stream."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status, "Custom Reason" if status == 500 else None)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b'{"ready": true}', (("X-Upstream", "yes"),))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/models/shop:predict":
            preds = ["yes" if r["age"] > 35 else "no" for r in body["instances"]]
            self._send(200, json.dumps({"predictions": preds}).encode(), (("X-Model-Version", "7"),))
        elif self.path == "/v2/models/shop/infer":
            n = body["inputs"][0]["shape"][0]
            out = {"model_name": "shop", "model_version": "v2", "outputs": [
                {"name": "label", "shape": [n], "datatype": "BYTES", "data": ["no"] * n}]}
            self._send(200, json.dumps(out).encode())
        elif self.path == "/v1/predictions":                     # a server speaking mlmon's native form
            self._send(200, json.dumps({"accepted": len(body["records"])}).encode())
        elif self.path == "/v1/models/broken:predict":
            self._send(500, b'{"error": "model crashed"}\n', (("X-Trace", "abc"), ("Set-Cookie", "a=1"),
                                                                ("Set-Cookie", "b=2")))
        elif self.path == "/v1/models/slow:predict":
            time.sleep(1.0)
            self._send(200, b'{"predictions": ["late"]}')
        elif self.path == "/v1/models/stream:predict":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")


@dataclass
class Rig:
    upstream: str
    proxy: str
    service: Service
    server: ProxyServer

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        self.service.flush_events()
        from prometheus_client import generate_latest

        text = generate_latest(self.service.registry).decode()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0


def raw_exchange(base: str, request: bytes, timeout: float = 5.0) -> tuple[bytes, list[tuple[float, bytes]]]:
    """Send raw bytes; return everything received and when each piece arrived (for streaming)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        t0 = time.monotonic()
        pieces = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            pieces.append((time.monotonic() - t0, data))
    return b"".join(p for _, p in pieces), pieces


def post(path: str, body: dict[str, Any], close: bool = True) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: model.local\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
            ).encode() + data


def without_date(raw: bytes) -> bytes:
    """The upstream stamps Date per response; everything else must be identical."""
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date: "))


@pytest.fixture
def rig(small_baseline: Any) -> Iterator[Rig]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    service = Service(make_config(), {"shop": small_baseline})
    up_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    proxy = build_proxy(service, up_url, "127.0.0.1:0", upstream_timeout=0.5)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield Rig(up_url, f"http://127.0.0.1:{proxy.server_address[1]}", service, proxy)
    finally:
        proxy.shutdown()
        proxy.server_close()
        proxy.monitor.stop()
        upstream.shutdown()
        upstream.server_close()


def row(i: int) -> dict[str, Any]:
    return {"age": 30.0 + i, "income": 1e4, "visits": 1, "plan": "basic", "country": "de"}


def test_v1_and_v2_pass_through_unchanged_and_feed_the_monitor(rig: Rig):
    v1 = post("/v1/models/shop:predict", {"instances": [row(1), row(9)]})
    direct, _ = raw_exchange(rig.upstream, v1)
    proxied, _ = raw_exchange(rig.proxy, v1)
    assert without_date(proxied) == without_date(direct)
    assert b"X-Model-Version: 7" in proxied
    v2 = post("/v2/models/shop/infer", {"inputs": [
        {"name": n, "shape": [3], "datatype": "BYTES" if n in ("plan", "country") else "FP64",
         "data": [row(i)[n] for i in range(3)]} for n in FEATURES]})
    direct, _ = raw_exchange(rig.upstream, v2)
    proxied, _ = raw_exchange(rig.proxy, v2)
    assert without_date(proxied) == without_date(direct)
    wait_for(lambda: rig.metric("mlmon_predictions_total", model="shop") >= 2)
    wait_for(lambda: rig.metric("mlmon_predictions_total", model="shop", version="v2") == 3)
    assert rig.metric("mlmon_prediction_class_total", model="shop", version="unknown", **{"class": "yes"}) == 1
    assert rig.metric("mlmon_prediction_latency_seconds_count", model="shop", version="v2") == 3
    assert rig.metric("mlmon_proxy_requests_total", model="shop", outcome="2xx") == 2


def test_native_form_is_monitored(rig: Rig):
    body = {"model": "shop", "version": "n1", "records": [{"features": row(i), "prediction": "yes"} for i in range(4)]}
    proxied, _ = raw_exchange(rig.proxy, post("/v1/predictions", body))
    assert proxied.startswith(b"HTTP/1.1 200 ") and proxied.endswith(b'{"accepted": 4}')
    wait_for(lambda: rig.metric("mlmon_predictions_total", model="shop", version="n1") == 4)


def test_upstream_500_passes_through_byte_for_byte_and_is_counted(rig: Rig):
    request = post("/v1/models/broken:predict", {"instances": [row(1)]})
    direct, _ = raw_exchange(rig.upstream, request)
    proxied, _ = raw_exchange(rig.proxy, request)
    assert proxied.startswith(b"HTTP/1.1 500 Custom Reason\r\n")
    assert without_date(proxied) == without_date(direct)             # both cookies, the trace header, the body
    assert rig.metric("mlmon_proxy_requests_total", model="shop", outcome="5xx") == 1
    wait_for(lambda: rig.metric("mlmon_prediction_errors_total", model="shop", version="unknown") == 1)


def test_upstream_timeout_is_answered_504_and_counted(rig: Rig):
    proxied, _ = raw_exchange(rig.proxy, post("/v1/models/slow:predict", {"instances": [row(1)]}))
    assert proxied.startswith(b"HTTP/1.1 504 ")
    assert rig.metric("mlmon_proxy_requests_total", model="shop", outcome="timeout") == 1
    wait_for(lambda: rig.metric("mlmon_prediction_errors_total", model="shop", version="unknown") == 1)
    ok, _ = raw_exchange(rig.proxy, post("/v1/models/shop:predict", {"instances": [row(1)]}))
    assert ok.startswith(b"HTTP/1.1 200 ")                             # the proxy is still serving


def test_streamed_response_arrives_as_a_stream(rig: Rig):
    request = post("/v1/models/stream:predict", {"instances": [row(1)]})
    direct, _ = raw_exchange(rig.upstream, request)
    proxied, pieces = raw_exchange(rig.proxy, request)
    assert without_date(proxied) == without_date(direct)
    first = next(t for t, data in pieces if b"data: one" in data)
    last = next(t for t, data in pieces if b"data: three" in data)
    assert first < 0.25 and last - first > 0.4                     # delivered as produced, not buffered
    assert rig.metric("mlmon_proxy_requests_total", model="shop", outcome="2xx") == 1


def test_get_and_keep_alive_pass_through(rig: Rig):
    request = (b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n" * 2
               + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    proxied, _ = raw_exchange(rig.proxy, request)
    assert proxied.count(b"HTTP/1.1 200 OK") == 3 and proxied.count(b"X-Upstream: yes") == 3


def test_keeps_serving_when_the_monitor_raises(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    def boom(batches: Any) -> int:
        raise RuntimeError("monitor down")

    monkeypatch.setattr(rig.service, "ingest_batches", boom)
    request = post("/v1/models/shop:predict", {"instances": [row(1)]})
    for _ in range(3):
        proxied, _ = raw_exchange(rig.proxy, request)
        assert proxied.startswith(b"HTTP/1.1 200 ") and b'"predictions"' in proxied
    wait_for(lambda: rig.server.stats.snapshot()["monitor"].get("monitor_error") == 3)


def test_unreachable_upstream_is_502_and_counted(small_baseline: Any):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    service = Service(make_config(), {"shop": small_baseline})
    proxy = build_proxy(service, f"http://127.0.0.1:{dead}", "127.0.0.1:0")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        proxied, _ = raw_exchange(f"http://127.0.0.1:{proxy.server_address[1]}",
                                  post("/v1/models/shop:predict", {"instances": [row(1)]}))
        assert proxied.startswith(b"HTTP/1.1 502 ")
        assert service.proxy_stats is not None
        assert service.proxy_stats()["requests"] == {("shop", "unreachable"): 1}
    finally:
        proxy.shutdown()
        proxy.server_close()
        proxy.monitor.stop()


def test_mlmon_proxy_command_end_to_end(tmp_path: Any, small_baseline: Any):
    """``mlmon proxy`` as a user runs it: config file, baseline file, upstream, metrics on server.listen."""
    import sys
    import urllib.request

    from stack import _Process, free_port

    small_baseline.save(tmp_path / "shop.baseline.json")
    metrics_port, proxy_port = free_port(), free_port()
    (tmp_path / "mlmon.yaml").write_text(
        f"server: {{listen: 127.0.0.1:{metrics_port}}}\n"
        "models:\n  - {name: shop, baseline: shop.baseline.json}\n")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proc = _Process([sys.executable, "-m", "exporter.cli", "proxy", "--upstream",
                     f"http://127.0.0.1:{upstream.server_address[1]}", "--listen", f"127.0.0.1:{proxy_port}",
                     "-c", str(tmp_path / "mlmon.yaml")], tmp_path / "proxy.log")
    try:
        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
                return resp.read().decode()

        def up() -> bool:
            try:
                return bool(metrics())
            except OSError:
                return False

        wait_for(up, timeout=30)
        request = post("/v1/models/shop:predict", {"instances": [row(1), row(9)]})
        direct, _ = raw_exchange(f"http://127.0.0.1:{upstream.server_address[1]}", request)
        proxied, _ = raw_exchange(f"http://127.0.0.1:{proxy_port}", request)
        assert without_date(proxied) == without_date(direct)
        wait_for(lambda: 'mlmon_predictions_total{model="shop",version="unknown"} 2.0' in metrics())
        assert 'mlmon_proxy_requests_total{model="shop",outcome="2xx"} 1.0' in metrics()
    finally:
        proc.stop()
        upstream.shutdown()
        upstream.server_close()
