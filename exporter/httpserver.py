"""mlmon's HTTP/1.1 server: one asyncio thread, requests parsed by httptools (llhttp, in C).

Why not a threaded WSGI server: everything mlmon does with a request is CPU work under the GIL
(parse, bin, count), so worker threads add only hand-offs and contention. waitress spent about
300 µs per request moving it from its I/O thread to a worker and back, more than parsing and
counting a single-record event; with several workers, concurrent batches slowed each other down
(``bench/ingest_http.py``, ``bench/events.py``). Here the thread that reads a request runs the
WSGI app on it at once and writes the answer; the socket work stays in C.

The app is any WSGI callable, run inline: a request holds the thread for as long as its app takes
(milliseconds for a batch or a scrape), as it would hold the GIL anyway. Bodies are read whole
before the app runs (``server.max_body_bytes`` caps them), so a slow sender never holds it.

Hardening, as ``server.*`` configures it: at most ``connection_limit`` open connections (more wait
in the kernel's accept backlog until one closes); a connection idle for ``idle_timeout`` is closed;
a request (headers and body) not received within ``request_timeout`` is answered 408 and closed, so
a slowloris client cannot keep a slot; a body declared or grown past ``max_body_bytes`` is answered 413 at once, unread;
headers are capped at 64 KiB; header names with ``_`` are dropped, as a proxy in front may have
meant ``-`` and the two would collide in the WSGI environ. Besides the PEP 3333 keys, the environ
holds ``mlmon.headers``: the headers by lower-case name, which the ingest routes read as they are,
and ``mlmon.later``: the app may answer with a :class:`Later` (exporter/offload.py uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

log = logging.getLogger("mlmon.http")

MAX_HEADER_BYTES = 64 * 1024
_SWEEP_SECONDS = 0.5
_STATUS_TEXT = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def status_text(status: int) -> str:
    """``"202 Accepted"``: a WSGI status string."""
    return _STATUS_TEXT.get(status) or f"{status} Unknown"


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status_text(status)}\r\n".encode("latin-1")


def _plain(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (_status_line(status) + b"Content-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


class Later:
    """What a WSGI app may return, instead of a body, when the environ has ``mlmon.later``: the
    server stops reading that connection, waits for ``future`` off its thread (answering other
    connections meanwhile), then calls ``then(future, start_response)`` on its thread for the body."""

    __slots__ = ("future", "then")

    def __init__(self, future: Future[Any], then: Callable[[Future[Any], Callable[..., Any]], Iterable[bytes]]) -> None:
        self.future = future
        self.then = then


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers each when complete."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.last_active = time.monotonic()
        self.request_started: float | None = None  # first byte of the request being received
        self.busy = False  # the app is running on a request of this connection
        self.waiting = False  # its answer is being prepared elsewhere (a Later)
        self.queue: deque[tuple[dict[str, Any], bool]] = deque()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False  # answered early (413, 431): nothing more is read from it

    # ---- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer if isinstance(peer, tuple) else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server._maybe_resume()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer_and_close(400, b'{"error": "protocol upgrades are not supported"}')
        except httptools.HttpParserError as exc:
            if not self.refused:
                self._answer_and_close(400, b'{"error": "malformed HTTP request: %s"}'
                                       % str(exc).encode("ascii", "replace").replace(b'"', b"'"))

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # ---- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        """The first byte of a request (llhttp skips blank lines between requests): its deadline starts."""
        self._reset()
        self.request_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._count_header_bytes(len(name) + len(value))

    def _count_header_bytes(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEADER_BYTES and not self.refused:
            self._answer_and_close(431, b'{"error": "request headers over 64 KiB"}')
            raise httptools.HttpParserError("headers too large")

    def on_headers_complete(self) -> None:
        length = self._header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body_bytes:
            self._too_large()
            raise httptools.HttpParserError("body too large")
        expect = self._header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:
            self._too_large()
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        # ``busy`` is raised before ``request_started`` is cleared and lowered only after the answer
        # is written (or ``waiting`` raised): a drain polling ``in_flight`` from another thread
        # never sees this request as finished before its answer is on its way.
        self.busy = True
        try:
            self.request_started = None
            if self.refused or self.transport is None:
                return
            request = (self.server._environ(self), self.parser.should_keep_alive() and not self.server.stopping)
            if self.waiting:  # pipelined behind an answer still being prepared: answered in order
                self.queue.append(request)
            else:
                self._serve(*request)
        finally:
            self.busy = False

    def _serve(self, environ: dict[str, Any], keep_alive: bool) -> None:
        """Called with ``busy`` raised."""
        answer = self.server.respond(environ, keep_alive)
        if isinstance(answer, Later):
            self.waiting = True
            if self.transport is not None:
                self.transport.pause_reading()
            later = answer

            def done(waited: asyncio.Future[Any]) -> None:
                if not waited.cancelled():
                    waited.exception()  # ``then`` reads the outcome from ``later.future``
                self._resume(environ, later, keep_alive)

            asyncio.wrap_future(later.future, loop=self.server.loop).add_done_callback(done)
            return
        self._send(answer, keep_alive)

    def _resume(self, environ: dict[str, Any], later: Later, keep_alive: bool) -> None:
        self.busy = True
        try:
            answer = self.server.respond(environ, keep_alive, later)
            assert isinstance(answer, bytes)
            self.waiting = False
            self._send(answer, keep_alive)
            while self.queue and not self.waiting and self.transport is not None and not self.transport.is_closing():
                self._serve(*self.queue.popleft())
            if not self.waiting and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        finally:
            self.busy = False

    def _send(self, response: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if not keep_alive:
            self.transport.close()

    # ---- helpers --------------------------------------------------------------------------

    def _header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def _too_large(self) -> None:
        self._answer_and_close(413, self.server.too_large())

    def _answer_and_close(self, status: int, body: bytes) -> None:
        self.refused = True
        self.request_started = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_plain(status, body))
            self.transport.close()

    def in_flight(self) -> bool:
        """A request being received or answered, or an answer not yet sent."""
        transport = self.transport
        pending = transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > 0
        return self.busy or self.waiting or self.request_started is not None or pending


class HttpServer:
    """A bound HTTP/1.1 server running ``app``; ``run()`` serves until ``close()``.

    The socket is bound at construction, so ``effective_port`` is known before ``run()``.
    """

    def __init__(self, app: WSGIApp, *, host: str | None = None, port: int = 0, unix_socket: str | None = None,
                 max_body_bytes: int, too_large: Callable[[], bytes], connection_limit: int = 1000,
                 idle_timeout: float = 30.0, request_timeout: float = 15.0, backlog: int = 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.too_large = too_large
        self.connection_limit = connection_limit
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self._accepting = 0  # sockets accepted whose connection is being set up
        self._paused = False
        self._listening = _bind(host, port, unix_socket, backlog)
        name = self._listening[0].getsockname()
        self.server_name, self.effective_port = ("localhost", 0) if unix_socket else (str(name[0]), int(name[1]))
        self._template: dict[str, Any] = {  # the environ keys that are the same for every request
            "SCRIPT_NAME": "", "SERVER_NAME": self.server_name, "SERVER_PORT": str(self.effective_port),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "mlmon.later": True,
        }
        self._thread: threading.Thread | None = None

    # ---- accepting ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        """Accept what is waiting, up to the connection limit; past it, stop watching the listening
        sockets, so further clients wait in the kernel's backlog until a connection closes."""
        while len(self.connections) + self._accepting < self.connection_limit:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: try again on the next wake-up
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._accepting += 1
            task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: _Connection(self), sock))
            task.add_done_callback(self._accepted)
        self._watch(False)

    def _accepted(self, task: asyncio.Task[Any]) -> None:
        self._accepting -= 1
        if not task.cancelled() and task.exception() is not None:
            log.debug("connection set-up failed: %s", task.exception())
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self._paused and not self.stopping and len(self.connections) + self._accepting < self.connection_limit:
            self._watch(True)

    def _watch(self, on: bool) -> None:
        for sock in self._listening:
            if sock.fileno() < 0:
                continue
            if on:
                self.loop.add_reader(sock, self._accept, sock)
            else:
                self.loop.remove_reader(sock)
        self._paused = not on

    # ---- lifecycle (from any thread) ------------------------------------------------------

    def run(self) -> None:
        """Serve in the calling thread until :meth:`close`."""
        self._thread = threading.current_thread()
        self.loop.call_soon(self._sweep)
        self._watch(True)
        try:
            self.loop.run_forever()
        finally:
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections go on being served."""
        self._call(self._close_listening)

    def _close_listening(self) -> None:
        self._watch(False)
        for sock in self._listening:
            sock.close()

    def close(self) -> None:
        """Stop serving: the listening socket and every connection close, ``run()`` returns."""
        self.stopping = True
        if self._thread is None:  # never ran: release the sockets here
            self._close_listening()
            self.loop.close()
            return

        def stop() -> None:
            self._close_listening()
            self.loop.stop()

        self._call(stop)

    def in_flight(self) -> int:
        return sum(1 for conn in list(self.connections) if conn.in_flight())

    def _call(self, fn: Callable[[], None]) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            fn()
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(fn)

    def _sweep(self) -> None:
        """Close idle connections and cut off requests that take too long to arrive."""
        self.loop.call_later(_SWEEP_SECONDS, self._sweep)  # first: whatever happens below, the sweep goes on
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.busy or conn.waiting or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.request_started is not None and now - conn.request_started > self.request_timeout:
                conn._answer_and_close(408, b'{"error": "request not received within server.request_timeout"}')
            elif conn.request_started is None and now - conn.last_active > self.idle_timeout:
                conn.transport.close()

    # ---- one request ----------------------------------------------------------------------

    def respond(self, environ: dict[str, Any], keep_alive: bool, later: Later | None = None) -> bytes | Later:
        """Run the app on a request (or finish a ``later`` answer): the whole response as bytes,
        or the app's ``Later`` when it answers once work done elsewhere is complete."""
        captured: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., None]:
            captured[:] = [status, headers]
            return lambda data: None

        try:
            result = self.app(environ, start_response) if later is None else later.then(later.future, start_response)
            if isinstance(result, Later):
                return result
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("unexpected error on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            captured[:] = ["500 Internal Server Error", [("Content-Type", "application/json")]]
            body = b'{"error": "internal error; see the sidecar\'s log"}'
        status, headers = captured
        out = [b"HTTP/1.1 ", status.encode("latin-1"), b"\r\n"]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                has_length = True
            elif lower in ("connection", "transfer-encoding"):
                continue
            out += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        if environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        if not has_length:
            out += [b"Content-Length: ", str(len(body)).encode(), b"\r\n"]
        if not keep_alive:
            out.append(b"Connection: close\r\n")
        out += [b"\r\n", body]
        return b"".join(out)

    def _environ(self, conn: _Connection) -> dict[str, Any]:
        url = conn.url
        if url.startswith(b"/"):  # origin form, what clients send a server (not a proxy)
            path, _, query = url.partition(b"#")[0].partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        if b"%" in path:
            path = unquote_to_bytes(path)
        body = b"".join(conn.body)
        environ = self._template.copy()
        environ["REQUEST_METHOD"] = conn.parser.get_method().decode("latin-1")
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + conn.parser.get_http_version()
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = (conn.peer[0], str(conn.peer[1])) if conn.peer else ("", "")
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        headers: dict[str, str] = {}
        for name, value in conn.headers:
            keys = _ENVIRON_KEYS.get(name) or _environ_key(name)
            if keys is _DROPPED:
                continue
            key, lower = keys
            text = value.decode("latin-1")
            if key in environ:
                text = f"{environ[key]},{text}"
            environ[key] = headers[lower] = text
        environ["mlmon.headers"] = headers
        return environ



_DROPPED = ("", "")
_ENVIRON_KEYS: dict[bytes, tuple[str, str]] = {}
"""Header name as received → (its environ key, its lower-case name), ``_DROPPED`` for one not passed
on; a cache of the names seen, bounded."""


def _environ_key(name: bytes) -> tuple[str, str]:
    text = name.decode("latin-1")
    key = text.upper()
    if "_" in key or key == "CONTENT-LENGTH":  # CONTENT_LENGTH is the length of the body as read
        keys = _DROPPED
    else:
        env = key.replace("-", "_")
        keys = (env if env == "CONTENT_TYPE" else "HTTP_" + env, text.lower())
    if len(_ENVIRON_KEYS) < 4096:
        _ENVIRON_KEYS[name] = keys
    return keys


def _bind(host: str | None, port: int, unix_socket: str | None, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address the name resolves to; with port 0, the
    first only, so that there is one port to report) or for a Unix socket only its owner may use."""
    if unix_socket is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix_socket)
        os.chmod(unix_socket, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
        return [sock]
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos[:1] if port == 0 else infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
