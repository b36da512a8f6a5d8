"""HTTP API: a Flask app factory and the production WSGI server (waitress).

Bad input never becomes a 500: malformed JSON is 400, an unknown model 404 naming the
configured ones, an oversized body 413, and a broken record is refused alone with its index
and reason while the rest of its batch is kept. Logs carry counts and field names, never
feature values.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from waitress.channel import HTTPChannel
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from exporter.batch import PayloadError
from exporter.config import ServerConfig
from exporter.formats import decode_event
from exporter.formats._common import decompress_body, load_json
from exporter.formats.labels import INVALID_LABEL, parse_labels
from exporter.formats.native import parse_predictions
from exporter.limits import return_large_allocations
from exporter.openapi import openapi_document
from exporter.service import Service
from exporter.status import model_status
from exporter.tls import TLSProxy
from exporter.webconfig import ReadAuth, WebConfig, load_web_config

log = logging.getLogger("mlmon.http")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


JSON_TYPES = ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
"""POST content types: anything else is 415, so a web page cannot POST cross-site without a CORS preflight."""
PROBES = frozenset({"/healthz", "/readyz"})
"""GET routes open to anyone: kubelet probes carry no credentials and answer nothing confidential."""
ROUTE_GROUPS = ("ingest", "read", "scrape")
"""ingest: the POST routes; read: /v1/models and /openapi.json; scrape: /metrics, /healthz, /readyz."""


def _json_type(mimetype: str) -> bool:
    return mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def create_app(service: Service, token: str | None = None, read_auth: ReadAuth | None = None,
               groups: tuple[str, ...] = ROUTE_GROUPS) -> Flask:
    """Build the app. ``token``, when set, is required as a bearer token on every POST;
    ``read_auth`` guards the GET routes other than the probes; ``groups`` picks the routes served."""
    app = Flask("mlmon")
    app.config["MAX_CONTENT_LENGTH"] = service.config.server.max_body_bytes
    expected = f"Bearer {token}".encode() if token else None

    @app.before_request
    def _authorise() -> Response | None:
        if request.method == "POST":
            if expected is not None:
                given = request.headers.get("Authorization", "").encode("latin-1", "replace")
                if not hmac.compare_digest(given, expected):
                    return _error(401, "missing or wrong bearer token in the Authorization header")
            if not _json_type(request.mimetype):
                service.count_unattributed("unsupported_media_type")
                return _error(415, f"Content-Type must be application/json (or a +json type), "
                                   f"not {request.mimetype or 'none'}", field="Content-Type")
            return None
        if read_auth is not None and read_auth.enabled and request.path not in PROBES \
                and not read_auth.allows(request.headers.get("Authorization")):
            response = _error(401, "missing or wrong credentials for this route (server.web_config_file "
                                   "basic_auth_users or server.read_token_env)")
            response.headers["WWW-Authenticate"] = read_auth.challenge
            return response
        return None

    def _body() -> Any:
        raw = decompress_body(request.get_data(cache=False), request.headers.get("Content-Encoding"),
                              service.config.server.max_body_bytes)
        return load_json(raw, "$")

    def _unknown_model(model: str, records: int) -> Response:
        """404 naming the configured models; the records are counted as refused."""
        service.count_unattributed("unknown_model", records)
        return _error(404, f"unknown model {model!r}; configured models: {', '.join(service.monitors)}",
                      field="model", models=list(service.monitors))

    def _bad_payload(exc: PayloadError) -> Response:
        service.count_unattributed("malformed_json" if exc.field == "$" else "invalid_payload")
        return _error(400, str(exc), field=exc.field)

    def route(group: str, method: str, path: str) -> Any:
        if group in groups:
            return app.route(path, methods=[method])
        return lambda view: view

    @route("ingest", "POST", "/v1/predictions")
    def predictions() -> Response:
        try:
            batch = parse_predictions(_body())
        except PayloadError as exc:
            return _bad_payload(exc)
        monitor = service.monitor(batch.model)
        if monitor is None:
            return _unknown_model(batch.model, batch.size + len(batch.rejected))
        result = monitor.ingest(batch)
        if result.rejected:
            log.info("model %s: rejected %d of %d records", batch.model, len(result.rejected),
                     result.accepted + len(result.rejected))
        status = 422 if result.rejected and not result.accepted else 200
        return _json({"accepted": result.accepted, "rejected": [r.to_json() for r in result.rejected],
                      "data_quality": result.problems}, status)

    def _object() -> dict[str, Any]:
        data = _body()
        if not isinstance(data, dict):
            raise PayloadError("$", "must be a JSON object")
        return data

    @route("ingest", "POST", "/v1/labels")
    def labels() -> Response:
        try:
            batch = parse_labels(_body())
        except PayloadError as exc:
            return _bad_payload(exc)
        service.flush_events()  # predictions joined from events just before their labels
        monitor = service.monitor(batch.model)
        if monitor is None:
            return _unknown_model(batch.model, batch.size)
        if batch.rejected:
            monitor.count_rejected(INVALID_LABEL, len(batch.rejected))
        result = monitor.ingest_labels(batch.ids, batch.labels, positions=batch.positions)
        rejected = sorted([*batch.rejected, *result.rejected], key=lambda r: r.index)
        return _json({"matched": result.matched, "unmatched": result.unmatched, "duplicates": result.duplicates,
                      "rejected": [r.to_json() for r in rejected]})

    @route("ingest", "POST", "/v1/events")
    def events() -> Response:
        try:
            raw = decompress_body(request.get_data(cache=False), request.headers.get("Content-Encoding"),
                                  service.config.server.max_body_bytes)
            result = service.handle_event(decode_event(dict(request.headers), raw))
        except PayloadError as exc:
            service.count_unattributed("invalid_event")
            return _error(400, str(exc), field=exc.field)
        return _json(result, 202)

    @route("ingest", "POST", "/v1/client-stats")
    def client_stats() -> Response:
        try:
            data = _object()
            model, client = data.get("model"), data.get("client_id")
            if not isinstance(model, str) or model not in service.monitors:
                raise PayloadError("model", f"unknown model {model!r}")
            if not isinstance(client, str) or not 0 < len(client) <= 64:
                raise PayloadError("client_id", "must be a string of 1 to 64 characters")
            counts = {r: data.get(r, 0) for r in ("dropped", "failed", "unserialisable")}
            for reason, value in counts.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise PayloadError(reason, "must be a non-negative integer")
        except PayloadError as exc:
            service.count_unattributed("invalid_payload")
            return _error(400, str(exc), field=exc.field)
        service.record_client_loss(model, client, counts)
        return _json({"status": "ok"})

    @route("scrape", "GET", "/metrics")
    def metrics() -> Response:
        """Plain text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``, as prometheus_client serves."""
        out = service.selfmon.exposition(request.headers.get("Accept"), request.headers.get("Accept-Encoding"))
        response = Response(out.body, mimetype=None,
                            headers={"Content-Type": out.content_type, "Vary": "Accept, Accept-Encoding"})
        if out.gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return response

    @route("scrape", "GET", "/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @route("scrape", "GET", "/readyz")
    def readyz() -> Response:
        if service.draining:
            return _error(503, "shutting down: draining in-flight requests")
        if not service.running:
            return _error(503, "the evaluation loop is not running")
        return _json({"status": "ready", "models": list(service.monitors)})

    @route("read", "GET", "/v1/models")
    def models() -> Response:
        return _json({"models": [model_status(m) for m in service.monitors.values()]})

    @route("read", "GET", "/openapi.json")
    def openapi() -> Response:
        return _json(openapi_document(groups, list(service.monitors)))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        service.count_unattributed("payload_too_large")
        return _error(413, f"request body over the limit of {service.config.server.max_body_bytes} bytes "
                           "(server.max_body_bytes); send smaller batches")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal error; see the sidecar's log")

    return app


def _env_token(service: Service, key: str) -> str | None:
    name = getattr(service.config.server, key)
    if not name:
        return None
    token = os.environ.get(name)
    if not token:
        raise SystemExit(f"server.{key}: environment variable {name} is not set or empty")
    return token


def token_from_env(service: Service) -> str | None:
    return _env_token(service, "auth_token_env")


def read_auth_from_config(service: Service, web: WebConfig | None) -> ReadAuth:
    return ReadAuth(_env_token(service, "read_token_env"), web.basic_auth_users if web else {})


class _Channel(HTTPChannel):
    """Remembers when the request being received began, so a slow sender can be cut off."""

    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        was_partial = self.request is not None
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        elif not was_partial or self.request_started is None:
            self.request_started = time.monotonic()
        return result


def _harden(server: Any, request_timeout: float) -> Any:
    """Close connections whose request (headers and body) takes longer than ``request_timeout``.

    waitress already closes connections idle for ``channel_timeout``; a slowloris client that sends
    one byte at a time is never idle, so without this deadline it would hold its slot forever.
    """
    server.channel_class = _Channel
    sweep = server.maintenance

    def maintenance(now: float) -> None:
        sweep(now)
        cutoff = time.monotonic() - request_timeout
        for channel in list(server.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.requests:
                channel.will_close = True

    server.maintenance = maintenance
    return server


def _waitress(app: Flask, cfg: ServerConfig, threads: int, **where: Any) -> Any:
    from waitress import create_server

    return_large_allocations()

    return _harden(create_server(
        app, threads=threads,
        # Flask answers a body over max_body_bytes with a counted JSON 413; a declared Content-Length
        # over twice the cap is refused by waitress at once instead of waiting for a body that may
        # never come (a slower sender is cut off by the request deadline).
        max_request_body_size=2 * cfg.max_body_bytes + (1 << 20), inbuf_overflow=cfg.max_body_bytes + 1024,
        connection_limit=cfg.connection_limit, channel_timeout=max(1, round(cfg.idle_timeout_seconds)),
        cleanup_interval=1, asyncore_use_poll=True, backlog=1024,
        ident="mlmon", clear_untrusted_proxy_headers=True, **where), cfg.request_timeout_seconds)


def build_server(service: Service, app: Flask | None = None) -> Any:
    """A bound (not yet running) plain-HTTP waitress server on ``server.listen``, every route."""
    cfg = service.config.server
    app = app or create_app(service, token_from_env(service), read_auth_from_config(service, None))
    return _waitress(app, cfg, cfg.threads, host=cfg.host, port=cfg.port)


def run_server(server: Any) -> None:
    """Serve until ``server.close()`` is called from another thread."""
    try:
        server.run()
    except OSError:
        # stop_server() from another thread invalidates the sockets under select(); that is the stop.
        if not getattr(server, "mlmon_stopping", False):
            raise


def stop_server(server: Any) -> None:
    """Let worker threads finish their requests, then close the sockets."""
    server.mlmon_stopping = True
    server.task_dispatcher.shutdown()
    server.close()


def _in_flight(server: Any) -> int:
    """Connections with a request being received, processed or its answer still being sent."""
    return sum(1 for ch in list(server.active_channels.values())
               if ch.requests or ch.total_outbufs_len or (ch.request is not None and not ch.request.empty))


@dataclass
class Listener:
    """One address mlmon listens on: a waitress server, with a TLS proxy in front when configured."""

    name: str
    address: str
    server: Any
    tls: TLSProxy | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.tls.effective_port if self.tls else self.server.effective_port

    @property
    def url(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        self.thread = threading.Thread(target=run_server, args=(self.server,), name=f"mlmon-{self.name}",
                                       daemon=True)
        self.thread.start()
        if self.tls:
            self.tls.start()

    def stop_accepting(self) -> None:
        if self.tls:
            self.tls.stop_accepting()
            return
        server = self.server

        def close_listener() -> None:
            server.accepting = False
            server.del_channel()
            server.socket.close()

        server.trigger.pull_trigger(close_listener)

    def close(self) -> None:
        stop_server(self.server)
        if self.tls:
            self.tls.close()


def build_listeners(service: Service) -> list[Listener]:
    """The ingest listener (``server.listen``) and, if configured, the scrape listener
    (``server.metrics_listen``: /metrics, /healthz, /readyz), each behind TLS when the web config
    file has ``tls_server_config``."""
    cfg = service.config.server
    web = load_web_config(cfg.web_config_file) if cfg.web_config_file else None
    token, read_auth = token_from_env(service), read_auth_from_config(service, web)
    main_groups: tuple[str, ...] = ROUTE_GROUPS if not cfg.metrics_listen else ("ingest", "read")
    plans = [("main", cfg.listen, main_groups, cfg.threads)]
    if cfg.metrics_listen:
        plans.append(("metrics", cfg.metrics_listen, ("scrape",), 2))
    warn_if_open(cfg, token)
    sockets_dir = tempfile.mkdtemp(prefix="mlmon-") if web and web.tls else None
    listeners = []
    for name, address, groups, threads in plans:
        app = create_app(service, token, read_auth, groups)
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        if web and web.tls and sockets_dir:
            path = os.path.join(sockets_dir, f"{name}.sock")
            server = _waitress(app, cfg, threads, unix_socket=path, unix_socket_perms="600")
            proxy = TLSProxy(host, int(port), web.tls.context(), path, connection_limit=cfg.connection_limit,
                             handshake_timeout=cfg.request_timeout_seconds)
            listeners.append(Listener(name, address, server, proxy))
        else:
            listeners.append(Listener(name, address, _waitress(app, cfg, threads, host=host, port=int(port))))
    return listeners


def warn_if_open(cfg: ServerConfig, token: str | None) -> bool:
    """Log a prominent warning when the ingest listener is reachable beyond this host without a token."""
    if token or _loopback(cfg.host):
        return False
    log.warning("SECURITY: the ingest listener %s is reachable beyond this host and has no token; anyone who "
                "can reach it can write predictions and labels. Set server.auth_token_env.", cfg.listen)
    return True


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def drain(listeners: list[Listener], service: Service, deadline_seconds: float) -> bool:
    """Stop accepting, fail readiness, and wait for in-flight requests; True if all finished in time."""
    service.draining = True
    for listener in listeners:
        listener.stop_accepting()
    until = time.monotonic() + deadline_seconds
    while time.monotonic() < until:
        if not any(_in_flight(listener.server) for listener in listeners):
            return True
        time.sleep(0.05)
    return False


def serve(service: Service, app: Flask | None = None) -> None:
    """Run the evaluation loop and the listeners until SIGTERM or SIGINT, then drain and return.

    The handlers are installed by the process itself, so SIGTERM also works when mlmon is PID 1 in
    a container (the kernel drops signals PID 1 has not asked for).
    """
    listeners = build_listeners(service)
    if app is not None:
        listeners[0].server.application = app
    # Everything built so far (baselines, app, libraries) lives as long as the process: freezing it
    # keeps full garbage collections from re-scanning it (65 ms pauses under ingest load).
    gc.collect()
    gc.freeze()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for listener in listeners:
            listener.start()
        service.start()
        for listener in listeners:
            log.info("mlmon %s listener on %s", listener.name, listener.url)
        while not stop.wait(1.0):
            if not all(lst.thread and lst.thread.is_alive() for lst in listeners):
                log.error("a listener stopped unexpectedly; shutting down")
                break
        deadline = service.config.server.drain_timeout_seconds
        log.info("signal %s: draining in-flight requests (up to %gs)", received[0] if received else "-", deadline)
        finished = drain(listeners, service, deadline)
        log.info("drain %s", "complete" if finished else "deadline reached; closing remaining connections")
    finally:
        service.stop()
        for listener in listeners:
            listener.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
