"""Monitoring without glue for Python model servers: a decorator and WSGI / ASGI middleware.

Each times the handler and hands its input and output to an :class:`~exporter.client.MlmonClient`
(which never blocks). The middleware reads inference bodies in any protocol mlmon parses (KServe
V1, Open Inference Protocol, Seldon, TF Serving): one record per row, the prediction from the
response. What the application and its client see is never changed — the request body is
buffered and handed on, the response passes through chunk by chunk — and a monitoring failure is
logged and swallowed, never raised into the request.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from exporter.batch import PayloadError
from exporter.client import MlmonClient
from exporter.formats import parse_request, parse_response

log = logging.getLogger("mlmon.middleware")

MAX_CAPTURE = 10 * 1024 * 1024
"""Bodies larger than this are passed through but not monitored (memory stays bounded)."""


def records_from_http(request: bytes, response: bytes | None,
                      feature_names: Sequence[str] | None = None) -> list[tuple[dict[str, Any], Any]]:
    """An inference request body (and its response, if successful) → ``[(features, prediction)]``.

    Raises :class:`PayloadError` when the request is no inference body mlmon reads; a response
    that cannot be read, or holds another number of rows, leaves the predictions None.
    """
    n, columns = parse_request(request, feature_names)
    predictions: list[Any] = [None] * n
    if response:
        try:
            parsed = parse_response(response)
        except PayloadError:
            parsed = []
        if len(parsed) == n:
            predictions = parsed
    names = list(columns)
    return [({name: columns[name][i] for name in names}, predictions[i]) for i in range(n)]


def _log_exchange(client: MlmonClient, request: bytes, response: bytes | None, latency: float, failed: bool,
                  feature_names: Sequence[str] | None) -> None:
    try:
        for features, prediction in records_from_http(request, None if failed else response, feature_names):
            client.record(features, prediction, latency_seconds=latency, error=failed)
    except PayloadError as exc:
        log.debug("mlmon: request not monitored (%s)", exc.field)
    except Exception:  # monitoring must never break serving
        log.exception("mlmon: recording an exchange failed")


def monitored(client: MlmonClient, *, features: Callable[..., dict[str, Any]] | None = None,
              prediction: Callable[[Any], Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: time a predict function and record its input and output.

    ``features(*args, **kwargs)`` gives the feature dict (default: the first positional argument if
    it is a dict, else the keyword arguments); ``prediction(result)`` the prediction (default: the
    result). An exception is recorded as a failed inference and re-raised unchanged.
    """
    def default_features(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return args[0] if args and isinstance(args[0], dict) else dict(kwargs)

    get_features = features or default_features
    get_prediction = prediction or (lambda result: result)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except Exception:
                _record_call(client, get_features, None, args, kwargs, None, time.perf_counter() - start, True)
                raise
            _record_call(client, get_features, get_prediction, args, kwargs, result, time.perf_counter() - start,
                         False)
            return result
        return wrapper
    return decorate


def _record_call(client: MlmonClient, get_features: Callable[..., dict[str, Any]],
                 get_prediction: Callable[[Any], Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any],
                 result: Any, latency: float, failed: bool) -> None:
    try:
        pred = None if get_prediction is None else get_prediction(result)
        client.record(get_features(*args, **kwargs), pred, latency_seconds=latency, error=failed)
    except Exception:
        log.exception("mlmon: recording a call failed")


class WSGIMiddleware:
    """``app = WSGIMiddleware(app, client)``: monitor POSTs whose path starts with ``path_prefix``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], client: MlmonClient, *, path_prefix: str = "/",
                 feature_names: Sequence[str] | None = None) -> None:
        self.app = app
        self.client = client
        self.path_prefix = path_prefix
        self.feature_names = feature_names

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or not str(environ.get("PATH_INFO", "")).startswith(
                self.path_prefix):
            return self.app(environ, start_response)
        start = time.perf_counter()
        stream = environ.get("wsgi.input")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = stream.read(length) if stream is not None and length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[int] = [500]

        def capture(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info) if exc_info else start_response(status_line, headers)

        try:
            result = self.app(environ, capture)
        except Exception:
            _log_exchange(self.client, body, None, time.perf_counter() - start, True, self.feature_names)
            raise

        def done(chunks: list[bytes] | None) -> None:
            response = b"".join(chunks) if chunks is not None else None
            _log_exchange(self.client, body, response, time.perf_counter() - start, status[0] >= 500,
                          self.feature_names)

        return _Tee(result, done, len(body) <= MAX_CAPTURE)


class _Tee:
    """Pass a WSGI response through unchanged while keeping a copy; report when it is closed."""

    def __init__(self, result: Iterable[bytes], done: Callable[[list[bytes] | None], None], capture: bool) -> None:
        self._result = result
        self._done = done
        self._chunks: list[bytes] | None = [] if capture else None
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._result:
            if self._chunks is not None:
                self._size += len(chunk)
                if self._size > MAX_CAPTURE:
                    self._chunks = None
                else:
                    self._chunks.append(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._chunks)


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ASGIMiddleware:
    """``app = ASGIMiddleware(app, client)``: the ASGI counterpart of :class:`WSGIMiddleware`."""

    def __init__(self, app: Callable[[dict[str, Any], Receive, Send], Awaitable[None]], client: MlmonClient, *,
                 path_prefix: str = "/", feature_names: Sequence[str] | None = None) -> None:
        self.app = app
        self.client = client
        self.path_prefix = path_prefix
        self.feature_names = feature_names

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not str(scope.get("path", "")).startswith(
                self.path_prefix):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request: list[bytes] = []
        response: list[bytes] = []
        status = [500]

        async def tap_receive() -> dict[str, Any]:
            message = await receive()
            if message.get("type") == "http.request":
                request.append(message.get("body", b""))
            return message

        async def tap_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status[0] = int(message.get("status", 500))
            elif message.get("type") == "http.response.body":
                response.append(message.get("body", b""))
            await send(message)

        failed = True
        try:
            await self.app(scope, tap_receive, tap_send)
            failed = status[0] >= 500
        finally:
            body = b"".join(request)
            out = b"".join(response)
            if len(body) <= MAX_CAPTURE and len(out) <= MAX_CAPTURE:
                _log_exchange(self.client, body, out, time.perf_counter() - start, failed, self.feature_names)
