"""Python client for model servers: never blocks, never fails a prediction.

Records go into a bounded queue and a background thread sends them in batches. When the
sidecar is slow or down the queue fills and new records are dropped (and counted), so
monitoring can never take the model server down with it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

log = logging.getLogger("mlmon.client")


class MlmonClient:
    def __init__(self, url: str, model: str, version: str = "unknown", *, batch_size: int = 500,
                 flush_interval: float = 1.0, max_queue: int = 100_000, timeout: float = 5.0,
                 token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._records: queue.Queue[dict[str, Any]] = queue.Queue(max_queue)
        self._labels: queue.Queue[dict[str, Any]] = queue.Queue(max_queue)
        self.dropped = 0
        self.sent = 0
        self.failed_batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlmon-client", daemon=True)
        self._thread.start()

    def record(self, features: dict[str, Any], prediction: Any = None, *, latency_seconds: float | None = None,
               id: str | None = None, error: bool = False, groups: dict[str, Any] | None = None) -> bool:
        """Queue one prediction; False if it was dropped because the queue is full."""
        rec: dict[str, Any] = {"features": features, "prediction": prediction}
        if latency_seconds is not None:
            rec["latency_seconds"] = latency_seconds
        if id is not None:
            rec["id"] = id
        if error:
            rec["error"] = True
        if groups:
            rec["groups"] = groups
        return self._put(self._records, rec)

    def label(self, id: str, label: Any) -> bool:
        """Queue the ground truth of an earlier prediction."""
        return self._put(self._labels, {"id": id, "label": label})

    def _put(self, q: queue.Queue[dict[str, Any]], item: dict[str, Any]) -> bool:
        try:
            q.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _drain(self, q: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while len(items) < self.batch_size:
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        return items

    def _post(self, path: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(f"{self.url}{path}", data=orjson.dumps(body), headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 422:  # 422: every record refused; reasons are in the sidecar's counters
                self.failed_batches += 1
                log.warning("mlmon sidecar answered %s on %s", exc.code, path)
        except (OSError, ValueError) as exc:
            self.failed_batches += 1
            log.warning("mlmon sidecar unreachable on %s: %s", path, exc)

    def flush(self) -> None:
        """Send everything queued now (called by the background thread, or before exit)."""
        while True:
            records = self._drain(self._records)
            if records:
                self._post("/v1/predictions", {"model": self.model, "version": self.version, "records": records})
                self.sent += len(records)
            labels = self._drain(self._labels)
            if labels:
                self._post("/v1/labels", {"model": self.model, "labels": labels})
            if not records and not labels:
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.flush()
            self._stop.wait(max(0.0, self.flush_interval - (time.monotonic() - started)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout * 2)
        self.flush()
