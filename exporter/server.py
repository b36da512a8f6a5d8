"""HTTP API: a Flask app factory, its fast ingest path, and the listeners that serve them.

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
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from exporter.batch import PayloadError
from exporter.config import ServerConfig
from exporter.formats import arrow, decode_event
from exporter.formats._common import decompress_body, read_json_body
from exporter.formats.arrow import MEDIA_TYPE as ARROW_STREAM
from exporter.formats.labels import INVALID_LABEL, parse_labels
from exporter.httpserver import HttpServer, Later, status_text
from exporter.limits import return_large_allocations
from exporter.offload import Offload, Prepared, prepare_body
from exporter.openapi import openapi_document
from exporter.service import Service
from exporter.status import model_status
from exporter.tls import TLSProxy
from exporter.webconfig import ReadAuth, WebConfig, load_web_config

log = logging.getLogger("mlmon.http")


Reply = tuple[int, Any]
"""A status and the JSON body to send: what a POST handler returns, whichever path served it."""
PostHandler = Callable[[bytes, Mapping[str, str]], Reply]
"""A POST route: raw body and lower-cased headers in, reply out. Free of Flask, so that the
fast path and Flask serve the same code."""


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _json(body: Any, status: int = 200) -> Response:
    return Response(_dumps(body), status=status, mimetype="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json(_problem(message, **extra), status)


def _problem(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **extra}


JSON_TYPES = ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
"""POST content types: anything else is 415, so a web page cannot POST cross-site without a CORS preflight."""
PROBES = frozenset({"/healthz", "/readyz"})
"""GET routes open to anyone: kubelet probes carry no credentials and answer nothing confidential."""
ROUTE_GROUPS = ("ingest", "read", "scrape")
"""ingest: the POST routes; read: /v1/models and /openapi.json; scrape: /metrics, /healthz, /readyz."""


def _json_type(mimetype: str) -> bool:
    return mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _mimetype(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class _PostGate:
    """What every POST passes before its handler: the bearer token (compared in constant time)
    and a JSON content type (or, for /v1/predictions, an Arrow stream), so a web page cannot POST
    cross-site without a CORS preflight."""

    def __init__(self, service: Service, token: str | None) -> None:
        self.service = service
        self.expected = f"Bearer {token}".encode() if token else None

    def check(self, authorization: str, mimetype: str, path: str) -> Reply | None:
        if self.expected is not None:
            given = authorization.encode("latin-1", "replace")
            if not hmac.compare_digest(given, self.expected):
                return 401, _problem("missing or wrong bearer token in the Authorization header")
        if mimetype == ARROW_STREAM and path == "/v1/predictions":
            if arrow.available():
                return None
            self.service.count_unattributed("unsupported_media_type")
            return 415, _problem(f"{ARROW_STREAM} needs pyarrow on the sidecar (pip install 'mlmon[arrow]')",
                                 field="Content-Type")
        if not _json_type(mimetype):
            self.service.count_unattributed("unsupported_media_type")
            return 415, _problem(f"Content-Type must be application/json (or a +json type), not {mimetype or 'none'}",
                                 field="Content-Type")
        return None


class _FastPost:
    """The ingest POST routes as plain WSGI in front of Flask.

    Flask's request context, routing and response objects cost more than parsing and counting a
    small event, and a large batch's body passes through werkzeug's stream wrappers; the hot
    routes skip both (``bench/ingest_http.py``, ``bench/events.py``). Same gate, same handlers,
    same replies as the Flask routes, which still serve anything this path leaves to them
    (a body without Content-Length, every other route and method).
    """

    def __init__(self, flask_app: Any, routes: dict[str, PostHandler], gate: _PostGate, max_body: int,
                 offload: Offload | None = None, finish: Callable[[Prepared], Reply] | None = None) -> None:
        self.flask_app = flask_app
        self.routes = routes
        self.gate = gate
        self.max_body = max_body
        self.offload = offload
        self.finish = finish

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | Later:
        handler = self.routes.get(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if handler is None or environ.get("REQUEST_METHOD") != "POST" or not length.isdigit():
            return self.flask_app(environ, start_response)
        try:
            reply = self.gate.check(environ.get("HTTP_AUTHORIZATION", ""), _mimetype(environ.get("CONTENT_TYPE", "")),
                                    environ.get("PATH_INFO", ""))
            if reply is None and int(length) > self.max_body:
                reply = _too_large(self.gate.service)
            if reply is None:
                given = environ.get("mlmon.headers")  # exporter/httpserver.py gives them ready
                headers = given if given is not None else _environ_headers(environ)
                raw = environ["wsgi.input"].read(int(length))
                later = self._offloaded(environ, raw, headers)
                if later is not None:
                    return later
                reply = handler(raw, headers)
        except Exception:
            log.exception("unexpected error on POST %s", environ.get("PATH_INFO"))
            reply = 500, _problem("internal error; see the sidecar's log")
        return _answer(reply, start_response)

    def _offloaded(self, environ: dict[str, Any], raw: bytes, headers: Mapping[str, str]) -> Later | None:
        """A large prediction batch goes to a worker process when the server can wait for it."""
        if self.offload is None or self.finish is None or not environ.get("mlmon.later") \
                or environ.get("PATH_INFO") != "/v1/predictions":
            return None
        encoding, media_type = headers.get("content-encoding"), _mimetype(headers.get("content-type", ""))
        future = self.offload.submit(raw, encoding, media_type)
        if future is None:
            return None
        offload, finish = self.offload, self.finish

        def then(done: Future[Prepared], start_response: Callable[..., Any]) -> Iterable[bytes]:
            try:
                try:
                    prepared = done.result()
                except Exception as exc:  # the worker died or failed: prepare the batch here instead
                    log.warning("ingest worker failed (%s); preparing the batch in the serving process", exc)
                    offload.failed()
                    prepared = prepare_body(raw, encoding, self.max_body, self.gate.service.monitors, media_type)
                reply = finish(prepared)
            except Exception:
                log.exception("unexpected error on POST /v1/predictions")
                reply = 500, _problem("internal error; see the sidecar's log")
            return _answer(reply, start_response)

        return Later(future, then)


def _answer(reply: Reply, start_response: Callable[..., Any]) -> list[bytes]:
    status, body = reply
    out = _dumps(body)
    start_response(status_text(status),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def _environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers from a WSGI environ, names lower-cased as the parsers read them."""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def _too_large(service: Service) -> Reply:
    service.count_unattributed("payload_too_large")
    return 413, _problem(f"request body over the limit of {service.config.server.max_body_bytes} bytes "
                         "(server.max_body_bytes); send smaller batches")


def _post_handlers(service: Service) -> tuple[dict[str, PostHandler], Callable[[Prepared], Reply]]:
    """The ingest routes, keyed by path, and how a batch prepared elsewhere is finished."""
    max_body = service.config.server.max_body_bytes

    def load(raw: bytes, headers: Mapping[str, str]) -> Any:
        return read_json_body(raw, headers.get("content-encoding"), max_body)

    def load_object(raw: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        data = load(raw, headers)
        if not isinstance(data, dict):
            raise PayloadError("$", "must be a JSON object")
        return data

    def unknown_model(model: str, records: int) -> Reply:
        """404 naming the configured models; the records are counted as refused."""
        service.count_unattributed("unknown_model", records)
        return 404, _problem(f"unknown model {model!r}; configured models: {', '.join(service.monitors)}",
                             field="model", models=list(service.monitors))

    def bad_payload(exc: PayloadError) -> Reply:
        service.count_unattributed("malformed_json" if exc.field == "$" else "invalid_payload")
        return 400, _problem(str(exc), field=exc.field)

    def predictions(raw: bytes, headers: Mapping[str, str]) -> Reply:
        return finish_predictions(prepare_body(raw, headers.get("content-encoding"), max_body, service.monitors,
                                               _mimetype(headers.get("content-type", ""))))

    def finish_predictions(prepared: Prepared) -> Reply:
        """A prepared batch (here or in a worker process) added to its model; the reply."""
        kind, first, second = prepared
        if kind == "payload":
            return bad_payload(PayloadError(first, second))
        monitor = service.monitor(first)
        if kind == "unknown_model" or monitor is None:
            return unknown_model(first, second if kind == "unknown_model" else second.size + len(second.rejected))
        result = monitor.apply(second)
        if result.rejected:
            log.info("model %s: rejected %d of %d records", first, len(result.rejected),
                     result.accepted + len(result.rejected))
        status = 422 if result.rejected and not result.accepted else 200
        return status, {"accepted": result.accepted, "rejected": [r.to_json() for r in result.rejected],
                        "data_quality": result.problems}

    def labels(raw: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            batch = parse_labels(load(raw, headers))
        except PayloadError as exc:
            return bad_payload(exc)
        service.flush_events()  # predictions joined from events just before their labels
        monitor = service.monitor(batch.model)
        if monitor is None:
            return unknown_model(batch.model, batch.size)
        if batch.rejected:
            monitor.count_rejected(INVALID_LABEL, len(batch.rejected))
        result = monitor.ingest_labels(batch.ids, batch.labels, positions=batch.positions)
        rejected = sorted([*batch.rejected, *result.rejected], key=lambda r: r.index)
        return 200, {"matched": result.matched, "unmatched": result.unmatched, "duplicates": result.duplicates,
                     "rejected": [r.to_json() for r in rejected]}

    def events(raw: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            result = service.handle_event(decode_event(headers, decompress_body(raw, headers.get("content-encoding"),
                                                                                max_body)))
        except PayloadError as exc:
            service.count_unattributed("invalid_event")
            return 400, _problem(str(exc), field=exc.field)
        return 202, result

    def client_stats(raw: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            data = load_object(raw, headers)
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
            return 400, _problem(str(exc), field=exc.field)
        service.record_client_loss(model, client, counts)
        return 200, {"status": "ok"}

    routes: dict[str, PostHandler] = {"/v1/predictions": predictions, "/v1/labels": labels, "/v1/events": events,
                                      "/v1/client-stats": client_stats}
    return routes, finish_predictions


def create_app(service: Service, token: str | None = None, read_auth: ReadAuth | None = None,
               groups: tuple[str, ...] = ROUTE_GROUPS) -> Flask:
    """Build the app. ``token``, when set, is required as a bearer token on every POST;
    ``read_auth`` guards the GET routes other than the probes; ``groups`` picks the routes served."""
    app = Flask("mlmon")
    app.config["MAX_CONTENT_LENGTH"] = service.config.server.max_body_bytes
    gate = _PostGate(service, token)
    posts, finish = _post_handlers(service) if "ingest" in groups else ({}, None)

    @app.before_request
    def _authorise() -> Response | None:
        if request.method == "POST":
            reply = gate.check(request.headers.get("Authorization", ""), request.mimetype, request.path)
            return None if reply is None else _json(reply[1], reply[0])
        if read_auth is not None and read_auth.enabled and request.path not in PROBES \
                and not read_auth.allows(request.headers.get("Authorization")):
            response = _error(401, "missing or wrong credentials for this route (server.web_config_file "
                                   "basic_auth_users or server.read_token_env)")
            response.headers["WWW-Authenticate"] = read_auth.challenge
            return response
        return None

    def route(group: str, method: str, path: str) -> Any:
        if group in groups:
            return app.route(path, methods=[method])
        return lambda view: view

    for path, handler in posts.items():
        def view(handler: PostHandler = handler) -> Response:
            status, body = handler(request.get_data(cache=False), {k.lower(): v for k, v in request.headers.items()})
            return _json(body, status)

        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])
    app.wsgi_app = _FastPost(app.wsgi_app, posts, gate, service.config.server.max_body_bytes,  # type: ignore[method-assign,assignment]
                             service.offload if finish is not None else None, finish)

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
    def _body_too_large(exc: RequestEntityTooLarge) -> Response:
        status, body = _too_large(service)
        return _json(body, status)

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


def _http_server(app: Any, service: Service, **where: Any) -> HttpServer:
    cfg = service.config.server
    return_large_allocations()

    def too_large() -> bytes:
        return _dumps(_too_large(service)[1])

    return HttpServer(app, max_body_bytes=cfg.max_body_bytes, too_large=too_large,
                      connection_limit=cfg.connection_limit, idle_timeout=cfg.idle_timeout_seconds,
                      request_timeout=cfg.request_timeout_seconds, **where)


def build_server(service: Service, app: Flask | None = None) -> HttpServer:
    """A bound (not yet running) plain-HTTP server on ``server.listen``, every route."""
    cfg = service.config.server
    app = app or create_app(service, token_from_env(service), read_auth_from_config(service, None))
    return _http_server(app, service, host=cfg.host, port=cfg.port)


def run_server(server: HttpServer) -> None:
    """Serve until ``stop_server(server)`` is called from another thread."""
    server.run()


def stop_server(server: HttpServer) -> None:
    """Close the listening socket and every connection; ``run_server`` returns."""
    server.close()


@dataclass
class Listener:
    """One address mlmon listens on: an HTTP server, with a TLS proxy in front when configured."""

    name: str
    address: str
    server: HttpServer
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
        self.server.stop_accepting()

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
    plans = [("main", cfg.listen, main_groups)]
    if cfg.metrics_listen:
        plans.append(("metrics", cfg.metrics_listen, ("scrape",)))
    warn_if_open(cfg, token)
    sockets_dir = tempfile.mkdtemp(prefix="mlmon-") if web and web.tls else None
    listeners = []
    for name, address, groups in plans:
        app = create_app(service, token, read_auth, groups)
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        if web and web.tls and sockets_dir:
            path = os.path.join(sockets_dir, f"{name}.sock")
            server = _http_server(app, service, unix_socket=path)
            proxy = TLSProxy(host, int(port), web.tls.context(), path, connection_limit=cfg.connection_limit,
                             handshake_timeout=cfg.request_timeout_seconds)
            listeners.append(Listener(name, address, server, proxy))
        else:
            listeners.append(Listener(name, address, _http_server(app, service, host=host, port=int(port))))
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
        if not any(listener.server.in_flight() for listener in listeners):
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
        listeners[0].server.app = app
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
