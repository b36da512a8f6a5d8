"""Load generator for the mlmon demo: steady traffic that drifts after a while, labels that arrive late.

Sends customers drawn from ``examples/model_server/world.py`` to the model server's ``/predict``
at RATE requests per second. After DRIFT_AFTER_SECONDS the world starts drifting, reaching full
drift DRIFT_RAMP_SECONDS later (covariate and concept drift, see world.py). For a share of the
predictions (LABEL_SHARE) the true outcome is posted to mlmon's ``POST /v1/labels`` about
LABEL_DELAY_SECONDS later, as a real feedback loop would. A small share of requests is malformed
(ERROR_SHARE) so the error panels have something to show.

Standard library only. Environment (defaults in brackets): MODEL_URL [http://model:8080],
MLMON_URL [http://model:8000], MODEL_NAME [churn], RATE [20], DRIFT_AFTER_SECONDS [900],
DRIFT_RAMP_SECONDS [300], LABEL_DELAY_SECONDS [120], LABEL_SHARE [0.8], ERROR_SHARE [0.002],
SEED [42], MLMON_TOKEN (optional).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# world.py lives with the model server; in the container both folders are mounted side by side.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "model_server"))
from world import sample_customer, sample_label

log = logging.getLogger("load_generator")


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def post(url: str, body: dict[str, Any], token: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:  # 4xx answers still carry a JSON body
        return json.loads(exc.read() or b"{}")


def drift_at(elapsed: float, after: float, ramp: float) -> float:
    if elapsed <= after:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, (elapsed - after) / ramp)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    model_url = os.environ.get("MODEL_URL", "http://model:8080").rstrip("/")
    mlmon_url = os.environ.get("MLMON_URL", "http://model:8000").rstrip("/")
    model_name = os.environ.get("MODEL_NAME", "churn")
    token = os.environ.get("MLMON_TOKEN") or None
    rate = _env("RATE", 20)
    drift_after, drift_ramp = _env("DRIFT_AFTER_SECONDS", 900), _env("DRIFT_RAMP_SECONDS", 300)
    label_delay, label_share = _env("LABEL_DELAY_SECONDS", 120), _env("LABEL_SHARE", 0.8)
    error_share = _env("ERROR_SHARE", 0.002)
    rng = random.Random(int(_env("SEED", 42)))

    pending: list[tuple[float, str, int]] = []  # (due time, prediction id, true label)
    start = time.monotonic()
    next_send = start
    last_report = start
    sent = failed = labelled = 0
    log.info("sending %.0f req/s to %s; drift from %.0fs over %.0fs; labels after ~%.0fs to %s",
             rate, model_url, drift_after, drift_ramp, label_delay, mlmon_url)
    while True:
        now = time.monotonic()
        drift = drift_at(now - start, drift_after, drift_ramp)
        features, groups = sample_customer(rng, drift)
        if rng.random() < error_share:
            features = {**features, "monthly_charges": "n/a"}  # the model server rejects this
        try:
            answer = post(f"{model_url}/predict", {"features": features, "groups": groups})
            sent += 1
            if "prediction" in answer and rng.random() < label_share:
                due = now + rng.uniform(0.5, 1.5) * label_delay
                heapq.heappush(pending, (due, answer["id"], sample_label(rng, features, groups, drift)))
        except (OSError, ValueError) as exc:
            failed += 1
            if failed % 50 == 1:
                log.warning("model server unavailable (%s); retrying", exc)
            time.sleep(1.0)

        due_labels = []
        while pending and pending[0][0] <= now and len(due_labels) < 500:
            _, pid, label = heapq.heappop(pending)
            due_labels.append({"id": pid, "label": label})
        if due_labels:
            try:
                post(f"{mlmon_url}/v1/labels", {"model": model_name, "labels": due_labels}, token)
                labelled += len(due_labels)
            except (OSError, ValueError) as exc:
                log.warning("could not post %d labels to mlmon (%s); dropped", len(due_labels), exc)

        if now - last_report >= 60:
            last_report = now
            log.info("sent %d predictions, %d labels, %d failures; drift %.2f; %d labels pending",
                     sent, labelled, failed, drift, len(pending))
        next_send += 1.0 / rate
        time.sleep(max(0.0, next_send - time.monotonic()))
        if time.monotonic() - next_send > 5:  # fell far behind (model slow): do not burst to catch up
            next_send = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
