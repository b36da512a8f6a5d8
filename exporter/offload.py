"""Large prediction batches parsed and encoded in a worker process: the second core.

Everything that happens to a batch before it touches state (gzip, JSON, the record checks,
binning against the baseline) depends only on the request's bytes and on the baselines and
config, which never change while mlmon runs, and it is most of a large batch's cost (the stage
table of bench/ingest_http.py); what must stay in the serving process is the label join and the
counters. So a worker
process prepares large batches (``ModelMonitor.prepare``) while the serving thread answers other
requests and adds prepared batches (``ModelMonitor.apply``); no model's state is split. Small
requests (events, labels, single records) are not worth the hand-off and never come here.

The worker starts with the first large batch, not with mlmon (an idle sidecar keeps one
process), and batches are prepared in the serving thread until it is ready. If the worker dies
or fails, the batch is prepared in the serving thread instead: a request is never lost to it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from exporter.batch import PayloadError
from exporter.config import Config
from exporter.formats._common import decompress_body, load_json
from exporter.formats.arrow import MEDIA_TYPE as ARROW_STREAM
from exporter.formats.arrow import load_arrow
from exporter.formats.fastjson import load_columnar
from exporter.formats.native import parse_predictions
from exporter.malloc import keep_freed_buffers
from exporter.monitor import ModelMonitor, PreparedBatch
from exporter.profile import Baseline

log = logging.getLogger("mlmon.offload")

Prepared = tuple[str, Any, Any]
"""What a worker returns: ``("ok", model, PreparedBatch)``, ``("payload", field, reason)`` for a
request to refuse with 400, or ``("unknown_model", model, records)``."""

_monitors: dict[str, ModelMonitor] = {}  # in the worker process: one monitor per model, never fed


def _start_worker(config: Config, baselines: dict[str, Baseline]) -> None:
    # Ctrl-C in a terminal reaches the whole process group; stopping is the serving process's call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_buffers()
    _monitors.update({m.name: ModelMonitor(m, baselines[m.name]) for m in config.models})


def _ready() -> bool:
    return bool(_monitors)


def prepare_body(raw: bytes, content_encoding: str | None, max_body: int,
                 monitors: dict[str, ModelMonitor] | None = None, media_type: str | None = None) -> Prepared:
    """Bytes of a ``POST /v1/predictions`` (JSON, or an Arrow stream if ``media_type`` says so) →
    a prepared batch; the same function runs in the worker (with its own monitors) and, as the
    fall-back, in the serving thread."""
    monitors = _monitors if monitors is None else monitors

    def numeric(model: str) -> frozenset[str]:
        return monitors[model].numeric_features if model in monitors else frozenset()

    def categorical(model: str) -> frozenset[str]:
        return monitors[model].categorical_features if model in monitors else frozenset()

    try:
        body = decompress_body(raw, content_encoding, max_body)
        data = load_arrow(body, numeric, categorical) if media_type == ARROW_STREAM else load_columnar(body, numeric)
        batch = parse_predictions(load_json(body, "$") if data is None else data)
    except PayloadError as exc:
        return "payload", exc.field, exc.reason
    monitor = monitors.get(batch.model)
    if monitor is None:
        return "unknown_model", batch.model, batch.size + len(batch.rejected)
    prepared: PreparedBatch = monitor.prepare(batch)
    return "ok", batch.model, prepared


class Offload:
    """A pool of ``workers`` processes preparing batches of at least ``min_bytes``."""

    def __init__(self, config: Config, baselines: dict[str, Baseline], workers: int = 1,
                 min_bytes: int = 64 * 1024) -> None:
        self.config = config
        self.baselines = baselines
        self.workers = workers
        self.min_bytes = min_bytes
        self.max_body = config.server.max_body_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._ready = False
        self._lock = threading.Lock()
        self.prepared = 0
        """Batches a worker prepared (for tests and benchmarks)."""
        self.failures = 0

    def submit(self, raw: bytes, content_encoding: str | None,
               media_type: str | None = None) -> Future[Prepared] | None:
        """A future of the prepared batch, or None when the caller should prepare it itself
        (small body, no workers configured, worker still starting)."""
        if self.workers <= 0 or len(raw) < self.min_bytes:
            return None
        with self._lock:
            if self._pool is None:
                try:
                    self._start()
                except Exception as exc:  # e.g. embedded in a script without a __main__ guard: spawn refuses
                    log.warning("ingest worker processes cannot start (%s); preparing every batch in the "
                                "serving process", exc)
                    self.workers = 0
                    self._pool = None
                return None
            if not self._ready:
                return None
            pool = self._pool
        try:
            future = pool.submit(prepare_body, raw, content_encoding, self.max_body, None, media_type)
        except RuntimeError:  # broken (a worker died) or shut down: a fresh pool on the next batch
            self.failed()
            return None
        self.prepared += 1
        return future

    def _start(self) -> None:
        """Called under the lock: spawn the workers; batches are prepared inline until they are up."""
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(self.config, self.baselines))
        warm = [self._pool.submit(_ready) for _ in range(self.workers)]

        def up(_: Future[bool]) -> None:
            if all(f.done() and not f.cancelled() and f.exception() is None for f in warm):
                self._ready = True
                log.info("ingest worker processes ready: %d", self.workers)

        for f in warm:
            f.add_done_callback(up)

    def failed(self) -> None:
        """The pool broke (a worker died) or a batch did not come back: counted, pool renewed."""
        self.failures += 1
        self._broken()

    def _broken(self) -> None:
        with self._lock:
            pool, self._pool, self._ready = self._pool, None, False
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._ready = self._pool, None, False
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
