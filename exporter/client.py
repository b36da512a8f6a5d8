"""Python client for model servers: never blocks, never fails a prediction, never loses data silently.

``record()`` serialises the record on the calling thread (a few microseconds with orjson), which
both copies it — later changes to the caller's dicts are not sent — and tells at once whether it
can be sent: a value no JSON can hold is refused for that record alone (counted as
``unserialisable``). numpy scalars and arrays, pandas values (``NA``, ``NaT``, timestamps),
``Decimal``, sets and tuples are converted. The serialised record goes into a bounded deque; a
background thread sends batches. When the sidecar is slow or down the deque fills and new records
are dropped — counted, never blocking the model server.

Counts tell the truth (:meth:`MlmonClient.stats`): ``sent`` only after the sidecar answered 2xx,
``failed`` for records in posts that failed, ``dropped`` for records never posted (full queue, or
still queued when ``close()`` reached its deadline), ``unserialisable`` for refused records. The
client also posts its loss counts to the sidecar (``POST /v1/client-stats``), so
``mlmon_client_records_lost_total`` shows client-side loss in Prometheus once the sidecar is
reachable. ``close()`` and the interpreter-exit flush are bounded by a deadline.
"""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import http.client
import logging
import threading
import time
import uuid
import weakref
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

log = logging.getLogger("mlmon.client")

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
LOSS_REASONS = ("dropped", "failed", "unserialisable")


def _default(value: Any) -> Any:
    """orjson fallback for the values model servers hold; anything else is refused (TypeError)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    module = type(value).__module__
    if module.startswith("pandas"):
        name = type(value).__name__
        if name in ("NAType", "NaTType"):
            return None
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if hasattr(value, "total_seconds"):
            return value.total_seconds()
        if hasattr(value, "tolist"):
            return value.tolist()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    raise TypeError(f"cannot send a value of type {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """JSON bytes of a record as mlmon sends it (raises TypeError for values it cannot hold)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


class MlmonClient:
    """Queue records for the sidecar from a model server's request threads.

    ``close_timeout`` bounds :meth:`close` (and the flush at interpreter exit): records still
    queued when it passes are counted as dropped.
    """

    def __init__(self, url: str, model: str, version: str = "unknown", *, batch_size: int = 500,
                 flush_interval: float = 1.0, max_queue: int = 100_000, timeout: float = 2.0,
                 close_timeout: float = 5.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._target = urlsplit(self.url)
        if self._target.scheme not in ("http", "https") or not self._target.hostname:
            raise ValueError(f"url must be http(s)://host:port, not {url!r}")
        self._conn: http.client.HTTPConnection | None = None
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.max_queue = max_queue
        self.client_id = uuid.uuid4().hex
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._records: collections.deque[bytes] = collections.deque()
        self._labels: collections.deque[bytes] = collections.deque()
        self._counts = {"sent": 0, "failed": 0, "dropped": 0, "unserialisable": 0, "labels_sent": 0,
                        "labels_failed": 0}
        self._count_lock = threading.Lock()
        self._reported: dict[str, int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._deadline = float("inf")
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlmon-client", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(lambda: (c := ref()) is not None and c.close())

    # ---- calling thread -----------------------------------------------------------------

    def record(self, features: dict[str, Any], prediction: Any = None, *, latency_seconds: float | None = None,
               id: str | None = None, error: bool = False, groups: dict[str, Any] | None = None) -> bool:
        """Queue one prediction (copied now); False if it was refused or dropped (and counted)."""
        rec: dict[str, Any] = {"features": features, "prediction": prediction}
        if latency_seconds is not None:
            rec["latency_seconds"] = latency_seconds
        if id is not None:
            rec["id"] = id
        if error:
            rec["error"] = True
        if groups:
            rec["groups"] = groups
        try:
            data = dumps(rec)
        except (TypeError, orjson.JSONEncodeError) as exc:
            self._add("unserialisable")
            log.debug("mlmon record refused: %s", exc)  # the type only, never the values
            return False
        return self._put(self._records, data)

    def label(self, id: str, label: Any) -> bool:
        """Queue the ground truth of an earlier prediction."""
        try:
            data = dumps({"id": id, "label": label})
        except (TypeError, orjson.JSONEncodeError):
            self._add("unserialisable")
            return False
        return self._put(self._labels, data)

    def stats(self) -> dict[str, int]:
        """``sent``, ``failed``, ``dropped``, ``unserialisable`` records (and labels), plus ``queued``."""
        with self._count_lock:
            out = dict(self._counts)
        out["queued"] = len(self._records) + len(self._labels)
        return out

    @property
    def sent(self) -> int:
        return self._counts["sent"]

    @property
    def dropped(self) -> int:
        return self._counts["dropped"]

    @property
    def failed(self) -> int:
        return self._counts["failed"]

    def _put(self, q: collections.deque[bytes], item: bytes) -> bool:
        if self._closed or len(q) >= self.max_queue:
            self._add("dropped")
            return False
        q.append(item)  # deque.append is atomic under the GIL: no lock on the hot path
        return True

    def _add(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[name] += n

    # ---- background thread --------------------------------------------------------------

    def _take(self, q: collections.deque[bytes]) -> list[bytes]:
        items: list[bytes] = []
        while len(items) < self.batch_size:
            try:
                items.append(q.popleft())
            except IndexError:
                break
        return items

    def _post(self, path: str, body: bytes) -> bool:
        """POST on one kept-alive connection (only the sender thread uses it); True when delivered."""
        timeout = min(self.timeout, max(0.05, self._deadline - time.monotonic()))
        try:
            if self._conn is None:
                cls = http.client.HTTPSConnection if self._target.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self._target.hostname or "127.0.0.1", self._target.port, timeout=timeout)
            else:
                self._conn.timeout = timeout
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(timeout)
            self._conn.request("POST", self._target.path.rstrip("/") + path, body=body, headers=self._headers)
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            log.warning("mlmon sidecar unreachable on %s: %s", path, type(exc).__name__)
            return False
        if 200 <= resp.status < 300 or resp.status == 422:  # 422: every record refused; its counters say why
            return True
        log.warning("mlmon sidecar answered %s on %s", resp.status, path)
        return False

    def _send_once(self) -> bool:
        """Send one batch of records and one of labels; False when both queues were empty."""
        records = self._take(self._records)
        if records:
            head = dumps({"model": self.model, "version": self.version})[:-1]
            body = head + b',"records":[' + b",".join(records) + b"]}"
            self._add("sent" if self._post("/v1/predictions", body) else "failed", len(records))
        labels = self._take(self._labels)
        if labels:
            body = dumps({"model": self.model})[:-1] + b',"labels":[' + b",".join(labels) + b"]}"
            self._add("labels_sent" if self._post("/v1/labels", body) else "labels_failed", len(labels))
        return bool(records or labels)

    def _report_loss(self) -> None:
        """Tell the sidecar the cumulative loss counts (only when they changed)."""
        with self._count_lock:
            loss = {k: self._counts[k] for k in LOSS_REASONS}
        if loss == self._reported or not any(loss.values()):
            return
        body = dumps({"model": self.model, "client_id": self.client_id, **loss})
        if self._post("/v1/client-stats", body):
            self._reported = loss

    def flush(self) -> None:
        """Send everything queued now (from the background thread, or before exit)."""
        while time.monotonic() < self._deadline and self._send_once():
            pass
        if time.monotonic() < self._deadline:
            self._report_loss()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.flush()
            except Exception:  # the sender must survive anything, or every later record would be stuck
                log.exception("mlmon client: sending failed")
            self._wake.wait(max(0.0, self.flush_interval - (time.monotonic() - started)))
            self._wake.clear()
        try:
            self.flush()  # close(): what is queued, until the deadline
        except Exception:
            log.exception("mlmon client: final flush failed")

    def close(self, timeout: float | None = None) -> dict[str, int]:
        """Flush and stop within ``timeout`` (default ``close_timeout``) seconds; returns :meth:`stats`.

        Records still queued at the deadline are counted as dropped; a post in flight at the
        deadline is abandoned to its own (bounded) socket timeout on the daemon sender thread.
        """
        if not self._closed:
            self._closed = True
            budget = self.close_timeout if timeout is None else timeout
            self._deadline = time.monotonic() + budget
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=max(0.0, self._deadline - time.monotonic()))
            left = len(self._records)
            self._records.clear()
            labels_left = len(self._labels)
            self._labels.clear()
            if left or labels_left:
                self._add("dropped", left)
                log.warning("mlmon client closed with %d records and %d labels unsent", left, labels_left)
        return self.stats()

    def __enter__(self) -> MlmonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
