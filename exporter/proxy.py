"""``mlmon proxy``: a reverse proxy in front of an unmodified model server that feeds the monitor.

The proxy forwards every request to the upstream and the upstream's answer back as it came —
status line, headers, body, chunk by chunk when the upstream streams — so a client cannot tell it
is there. Hop-by-hop headers (RFC 9110 §7.6.1) are the only ones it does not copy; it adds none.
It measures each inference's latency and status itself. An upstream it cannot reach is answered
502 and an upstream that does not answer within ``upstream_timeout`` is answered 504, both counted.

Monitoring happens off the request path: after the response is sent, the exchange is put on a
bounded queue; a worker thread parses it (KServe V1, Open Inference Protocol V2, mlmon's native
form) and ingests it. A full queue drops the exchange (counted); a monitor that raises is logged and
counted; the proxy keeps serving either way.
"""

from __future__ import annotations

import http.client
import logging
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from exporter.batch import Batch, PayloadError
from exporter.formats import parse_request, parse_response
from exporter.formats._common import load_json
from exporter.formats.native import parse_predictions
from exporter.formats.oip import model_info
from exporter.service import Service

log = logging.getLogger("mlmon.proxy")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade"})
MAX_CAPTURE = 10 * 1024 * 1024
"""Bodies above this size are forwarded but not monitored."""
_V1 = re.compile(r"^/v1/models/(?P<model>[^/:]+)(?::predict)?$")
_V2 = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


@dataclass
class Exchange:
    """One forwarded request and what came back, queued for the monitor."""

    path: str
    request: bytes
    response: bytes | None
    status: int
    latency: float
    request_id: str | None


class ProxyStats:
    """Counters of the proxy itself: requests by outcome and monitoring trouble (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.monitor: Counter[str] = Counter()

    def request(self, model: str, outcome: str) -> None:
        with self._lock:
            self.requests[(model, outcome)] += 1

    def monitor_event(self, reason: str) -> None:
        with self._lock:
            self.monitor[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "monitor": dict(self.monitor)}


def _outcome(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class ProxyMonitor:
    """Turns exchanges into records on a worker thread; never raises into the request path."""

    def __init__(self, service: Service, stats: ProxyStats, max_queue: int = 10_000) -> None:
        self.service = service
        self.stats = stats
        self._queue: queue.Queue[Exchange | None] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="mlmon-proxy-monitor", daemon=True)
        self._thread.start()

    def submit(self, exchange: Exchange) -> None:
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:
            self.stats.monitor_event("queue_full")

    def model_for(self, path: str) -> tuple[str | None, str | None]:
        """``(mlmon model, version)`` an inference path names, mapped onto the configured models."""
        path = path.split("?", 1)[0]
        m = _V2.match(path) or _V1.match(path)
        name = m.group("model") if m else None
        version = m.groupdict().get("version") if m else None
        if name in self.service.monitors:
            return name, version
        default = self.service.config.events.default_model
        if default is None and len(self.service.monitors) == 1:
            default = next(iter(self.service.monitors))
        return default, version

    def batch(self, ex: Exchange) -> Batch | None:
        path = ex.path.split("?", 1)[0]
        if path.rstrip("/").endswith("/v1/predictions"):
            return parse_predictions(load_json(ex.request))  # the native form names model and version itself
        model, version = self.model_for(ex.path)
        if model is None:
            self.stats.monitor_event("unknown_model")
            return None
        cfg = self.service.config.model(model)
        n, columns = parse_request(ex.request, cfg.feature_names if cfg else None)
        if n == 0:
            return None
        failed = ex.status >= 500
        predictions = None
        if not failed and 200 <= ex.status < 300 and ex.response:
            try:
                parsed = parse_response(ex.response, self.service.config.events.outputs.get(model))
                predictions = parsed if len(parsed) == n else None
                version = model_info(_json_or_none(ex.response))[1] or version
            except PayloadError:
                self.stats.monitor_event("unreadable_response")
        ids: list[str | None] | None = None
        if ex.request_id:
            ids = [ex.request_id] if n == 1 else [f"{ex.request_id}:{i}" for i in range(n)]
        return Batch(model=model, version=version or self.service.config.events.default_version, size=n,
                     features=dict(columns), predictions=predictions, ids=ids,
                     latency_seconds=np.full(n, ex.latency), error=np.full(n, failed))

    def _run(self) -> None:
        while True:
            ex = self._queue.get()
            if ex is None:
                return
            try:
                batch = self.batch(ex)
                if batch is not None:
                    self.service.ingest_batches([batch])
            except PayloadError:
                self.stats.monitor_event("not_an_inference")
            except Exception:
                self.stats.monitor_event("monitor_error")
                log.exception("mlmon proxy: monitoring an exchange failed (the response was served)")

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def _json_or_none(body: bytes) -> Any:
    try:
        return load_json(body)
    except PayloadError:
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("proxy %s", format % args)

    def _upstream(self) -> http.client.HTTPConnection:
        local = self.server.local
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = self.server.connect()
        return conn

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._read_body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start = time.perf_counter()
        model = self.server.monitor.model_for(self.path)[0] or "__unknown__"
        try:
            resp = self._send_upstream(body, headers)
        except TimeoutError:
            self.server.stats.request(model, "timeout")
            self._own_answer(504, b'{"error": "mlmon proxy: the upstream did not answer in time"}')
            self._record(body, None, 504, start)
            return
        except OSError:
            self.server.stats.request(model, "unreachable")
            self._own_answer(502, b'{"error": "mlmon proxy: the upstream is unreachable"}')
            self._record(body, None, 502, start)
            return
        captured = self._relay(resp)
        self.server.stats.request(model, _outcome(resp.status))
        self._record(body, captured, resp.status, start)

    def _send_upstream(self, body: bytes, headers: list[tuple[str, str]]) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            conn = self._upstream()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body or None)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                conn.close()
                self.server.local.conn = None
                if attempt:  # a kept-alive connection the upstream closed: retry once on a fresh one
                    raise
            except OSError:
                conn.close()
                self.server.local.conn = None
                raise
        raise OSError("unreachable")

    def _relay(self, resp: http.client.HTTPResponse) -> bytes | None:
        """Send the upstream's answer back as it comes; return a copy of the body (None if too large)."""
        self.send_response_only(resp.status, resp.reason)
        chunked = resp.chunked
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if resp.will_close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        copy: list[bytes] | None = []
        size = 0
        try:
            while True:
                chunk = resp.read1(65536) if chunked else resp.read(65536)
                if not chunk:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
                if copy is not None:
                    size += len(chunk)
                    if size > MAX_CAPTURE:
                        copy = None
                    else:
                        copy.append(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        finally:
            if resp.will_close:
                self._upstream().close()
                self.server.local.conn = None
        return b"".join(copy) if copy is not None else None

    def _own_answer(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body: bytes, response: bytes | None, status: int, start: float) -> None:
        if self.command != "POST" or len(body) > MAX_CAPTURE:
            return
        rid = self.headers.get("X-Request-Id") or self.headers.get("Ce-Id")
        self.server.monitor.submit(Exchange(self.path, body, response, status, time.perf_counter() - start, rid))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, listen: tuple[str, int], upstream: str, monitor: ProxyMonitor, stats: ProxyStats,
                 upstream_timeout: float = 300.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--upstream must be an http(s) URL such as http://127.0.0.1:8080, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.upstream_https = parts.scheme == "https"
        self.upstream_timeout = upstream_timeout
        self.monitor = monitor
        self.stats = stats
        self.local = threading.local()
        super().__init__(listen, _Handler)

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.upstream_https else http.client.HTTPConnection
        return cls(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)


def build_proxy(service: Service, upstream: str, listen: str, upstream_timeout: float = 300.0) -> ProxyServer:
    """A bound proxy (``serve_forever()`` to run, ``shutdown()`` to stop); its stats join /metrics."""
    host, _, port = listen.rpartition(":")
    stats = ProxyStats()
    service.proxy_stats = stats.snapshot
    return ProxyServer((host.strip("[]") or "127.0.0.1", int(port)), upstream, ProxyMonitor(service, stats), stats,
                       upstream_timeout)
