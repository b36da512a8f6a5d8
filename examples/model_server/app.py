"""Example model server: a numpy churn model behind Flask, reporting every prediction to mlmon.

    POST /predict   {"features": {"age": 41, "tenure_months": 12, "monthly_charges": 80.5,
                                  "contract": "month-to-month"},
                     "groups": {"gender": "female"}, "id": "optional-request-id"}
                 → {"id": "...", "prediction": 1, "probability": 0.71, "model": "churn", "version": "v1"}
    GET  /healthz

Monitoring never gets in the way of serving: each prediction is put on a bounded in-memory
queue and a background thread posts batches to the sidecar (``MLMON_URL``, plain HTTP on
127.0.0.1 because mlmon shares this pod's network). If the sidecar is slow or down, records are
dropped and counted, and the prediction is still answered.

Environment: MODEL_NAME (churn), MODEL_VERSION (v1), MLMON_URL (http://127.0.0.1:8000),
MLMON_TOKEN (optional bearer token), PORT (8080).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from flask import Flask, jsonify, request
from model import train

log = logging.getLogger("model_server")


class SidecarReporter:
    """Fire-and-forget batching of prediction records to mlmon's ``POST /v1/predictions``."""

    def __init__(self, url: str, model: str, version: str, *, token: str | None = None,
                 batch_size: int = 200, flush_seconds: float = 0.5, max_queue: int = 10_000,
                 timeout: float = 2.0) -> None:
        self.endpoint = url.rstrip("/") + "/v1/predictions"
        self.model, self.version, self.token = model, version, token
        self.batch_size, self.flush_seconds, self.timeout = batch_size, flush_seconds, timeout
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._last_warning = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlmon-reporter", daemon=True)
        self._thread.start()

    def report(self, record: dict[str, Any]) -> None:
        """Never blocks, never raises: a full queue drops the record."""
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._drop(1, "queue full")

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        now = time.monotonic()
        if now - self._last_warning > 30:  # one line per 30 s, not one per prediction
            self._last_warning = now
            log.warning("mlmon sidecar unavailable (%s); %d records dropped so far", why, self.dropped)

    def _run(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            batch: list[dict[str, Any]] = []
            deadline = time.monotonic() + self.flush_seconds
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.queue.get(timeout=remaining))
                except queue.Empty:
                    break
            if batch:
                self._post(batch)

    def _post(self, records: list[dict[str, Any]]) -> None:
        body = json.dumps({"model": self.model, "version": self.version, "records": records}).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            # 422 / 200 with per-record rejections are mlmon's business (it counts them); a 4xx
            # for the whole batch is a configuration problem worth a log line.
            if exc.code != 422:
                self._drop(len(records), f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # refused, timeout, DNS, reset
            self._drop(len(records), str(exc))


def create_app() -> Flask:
    model_name = os.environ.get("MODEL_NAME", "churn")
    version = os.environ.get("MODEL_VERSION", "v1")
    reporter = SidecarReporter(os.environ.get("MLMON_URL", "http://127.0.0.1:8000"), model_name, version,
                               token=os.environ.get("MLMON_TOKEN") or None)
    model = train()
    app = Flask(__name__)
    app.config["reporter"] = reporter

    @app.post("/predict")
    def predict():
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("features"), dict):
            return jsonify(error='body must be JSON like {"features": {...}, "groups": {...}}'), 400
        features, groups = payload["features"], payload.get("groups") or {}
        rid = str(payload.get("id") or uuid.uuid4().hex)
        record: dict[str, Any] = {"id": rid, "features": features}
        if isinstance(groups, dict):
            record["groups"] = groups
        start = time.perf_counter()
        try:
            probability = float(model.predict_proba([features])[0])
        except (ValueError, TypeError, KeyError) as exc:
            record.update(error=True, latency_seconds=time.perf_counter() - start)
            reporter.report(record)
            return jsonify(id=rid, error=str(exc)), 400
        latency = time.perf_counter() - start
        prediction = int(probability >= 0.5)
        record.update(prediction={"0": 1 - probability, "1": probability}, latency_seconds=latency)
        reporter.report(record)
        return jsonify(id=rid, prediction=prediction, probability=round(probability, 4),
                       model=model_name, version=version)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", version=version, sidecar_dropped=reporter.dropped)

    return app


def main() -> None:
    from waitress import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop promptly, flushing the reporter
    app = create_app()
    port = int(os.environ.get("PORT", "8080"))
    log.info("serving on 0.0.0.0:%d", port)
    try:
        serve(app, host="0.0.0.0", port=port, threads=8)
    finally:
        app.config["reporter"].close()


if __name__ == "__main__":
    main()
