"""TLS in front of the HTTP server (exporter/httpserver.py), which speaks only plain HTTP.

An asyncio loop accepts TLS connections, completes the handshake within a deadline and pipes the
decrypted bytes to the HTTP server listening on a private Unix socket (mode 0600 in a 0700
directory), so every limit and timeout of the plain listener applies unchanged behind TLS, and the
thread that runs the app never spends time on encryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading

log = logging.getLogger("mlmon.tls")


class TLSProxy:
    """Listens on ``host:port`` with TLS and forwards each connection to ``backend`` (a Unix socket path)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, backend: str, *,
                 connection_limit: int, handshake_timeout: float) -> None:
        self.host, self.port = host, port
        self.context = context
        self.backend = backend
        self.handshake_timeout = handshake_timeout
        self._slots = connection_limit
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def effective_port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlmon-tls", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._handle, self.host, self.port, ssl=self.context,
                ssl_handshake_timeout=self.handshake_timeout, backlog=512))
        except BaseException as exc:  # reported to start()'s caller, which raises it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._slots:
            writer.close()
            return
        self._open += 1
        try:
            b_reader, b_writer = await asyncio.open_unix_connection(self.backend)
        except OSError:
            self._open -= 1
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, b_writer), self._pipe(b_reader, writer))
        finally:
            self._open -= 1
            for w in (writer, b_writer):
                w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until either side ends; the server's idle and request timeouts end stalled clients."""
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()
                else:
                    dst.close()

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def close(self) -> None:
        if self._thread is None:
            return
        self.stop_accepting()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None
