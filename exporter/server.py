"""HTTP API: a Flask app factory and the production WSGI server (waitress).

Bad input never becomes a 500: malformed JSON is 400, an unknown model 404 naming the
configured ones, an oversized body 413, and a broken record is refused alone with its index
and reason while the rest of its batch is kept. Logs carry counts and field names, never
feature values.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from exporter.batch import PayloadError
from exporter.formats import decode_event
from exporter.formats._common import decompress_body
from exporter.formats.native import parse_predictions
from exporter.service import Service

log = logging.getLogger("mlmon.http")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def create_app(service: Service, token: str | None = None) -> Flask:
    """Build the app. ``token``, when set, is required as a bearer token on every POST."""
    app = Flask("mlmon")
    app.config["MAX_CONTENT_LENGTH"] = service.config.server.max_body_bytes
    expected = f"Bearer {token}".encode() if token else None

    @app.before_request
    def _authorise() -> Response | None:
        if expected is None or request.method != "POST":
            return None
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "missing or wrong bearer token in the Authorization header")
        return None

    def _body() -> Any:
        try:
            raw = decompress_body(request.get_data(cache=False), request.headers.get("Content-Encoding"),
                                  service.config.server.max_body_bytes)
        except RequestEntityTooLarge:
            raise
        if not raw:
            raise PayloadError("$", "the request body is empty")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = exc
        try:
            # Python's json module writes NaN/Infinity by default; accept them so those values
            # are counted as missing instead of losing the whole batch.
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise PayloadError("$", f"malformed JSON: {error}") from None

    @app.post("/v1/predictions")
    def predictions() -> Response:
        try:
            batch = parse_predictions(_body())
        except PayloadError as exc:
            service.count_unattributed("malformed_json" if exc.field == "$" else "invalid_payload")
            return _error(400, str(exc), field=exc.field)
        monitor = service.monitor(batch.model)
        if monitor is None:
            service.count_unattributed("unknown_model", batch.size + len(batch.rejected))
            return _error(404, f"unknown model {batch.model!r}; configured models: {', '.join(service.monitors)}",
                          field="model", models=list(service.monitors))
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

    @app.post("/v1/labels")
    def labels() -> Response:
        try:
            data = _object()
            model = data.get("model")
            if not isinstance(model, str) or not model:
                raise PayloadError("model", "is required")
            if "labels" in data:
                items = data["labels"]
                if not isinstance(items, list):
                    raise PayloadError("labels", "must be a list of {id, label}")
            elif "id" in data:
                items = [{"id": data.get("id"), "label": data.get("label")}]
            else:
                raise PayloadError("labels", "is required (or a single 'id' and 'label')")
        except PayloadError as exc:
            service.count_unattributed("malformed_json" if exc.field == "$" else "invalid_payload")
            return _error(400, str(exc), field=exc.field)
        service.flush_events()  # predictions joined from events just before their labels
        monitor = service.monitor(model)
        if monitor is None:
            service.count_unattributed("unknown_model", len(items))
            return _error(404, f"unknown model {model!r}; configured models: {', '.join(service.monitors)}",
                          field="model", models=list(service.monitors))
        ids, values, rejected = [], [], []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item or "label" not in item:
                rejected.append({"index": i, "field": f"labels[{i}]", "reason": "must be an object with id and label"})
                ids.append(None)
                values.append(None)
                continue
            ids.append(item["id"])
            values.append(item["label"])
        if rejected:
            monitor.count_rejected("invalid_label", len(rejected))
        skip = {r["index"] for r in rejected}
        keep = [i for i in range(len(items)) if i not in skip]
        result = monitor.ingest_labels([ids[i] for i in keep], [values[i] for i in keep])
        rejected += [{**r, "index": keep[r["index"]], "field": r["field"].replace(
            f"labels[{r['index']}]", f"labels[{keep[r['index']]}]")} for r in result.rejected]
        return _json({"matched": result.matched, "unmatched": result.unmatched, "duplicates": result.duplicates,
                      "rejected": sorted(rejected, key=lambda r: r["index"])})

    @app.post("/v1/events")
    def events() -> Response:
        try:
            raw = decompress_body(request.get_data(cache=False), request.headers.get("Content-Encoding"),
                                  service.config.server.max_body_bytes)
            result = service.handle_event(decode_event(dict(request.headers), raw))
        except PayloadError as exc:
            service.count_unattributed("invalid_event")
            return _error(400, str(exc), field=exc.field)
        return _json(result, 202)

    @app.post("/v1/client-stats")
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

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(service.registry), mimetype=None,
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        if not service.running:
            return _error(503, "the evaluation loop is not running")
        return _json({"status": "ready", "models": list(service.monitors)})

    @app.get("/v1/models")
    def models() -> Response:
        return _json({"models": [m.status() for m in service.monitors.values()]})

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


def token_from_env(service: Service) -> str | None:
    name = service.config.server.auth_token_env
    if not name:
        return None
    token = os.environ.get(name)
    if not token:
        raise SystemExit(f"server.auth_token_env: environment variable {name} is not set or empty")
    return token


def build_server(service: Service, app: Flask | None = None) -> Any:
    """A bound (not yet running) waitress server; ``.effective_port``, ``.run()``, ``.close()``."""
    from waitress import create_server

    app = app or create_app(service, token_from_env(service))
    cfg = service.config.server
    return create_server(
        app, host=cfg.host, port=cfg.port, threads=cfg.threads,
        # Flask enforces max_body_bytes with a JSON 413 that is counted; waitress's own, larger
        # cap only stops abuse that would otherwise be buffered whole.
        max_request_body_size=4 * cfg.max_body_bytes + (1 << 20), inbuf_overflow=cfg.max_body_bytes + 1024,
        ident="mlmon", clear_untrusted_proxy_headers=True)


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


def serve(service: Service, app: Flask | None = None) -> None:
    """Run the evaluation loop and the HTTP server until interrupted."""
    server = build_server(service, app)
    # Everything built so far (baselines, app, libraries) lives as long as the process: freezing it
    # keeps full garbage collections from re-scanning it (65 ms pauses under ingest load).
    gc.collect()
    gc.freeze()
    service.start()
    log.info("mlmon listening on http://%s:%s", service.config.server.host, server.effective_port)
    try:
        run_server(server)
    finally:
        service.stop()
        stop_server(server)
