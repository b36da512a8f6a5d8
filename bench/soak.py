"""Sustained mixed load on a real ``mlmon serve``: predictions, labels and logger events at fixed
rates with a scrape every second, for ``--seconds`` (default 600), on loopback only.

The sidecar runs as its own process (the production path: the HTTP server, the evaluation timer,
checkpoints every 30 s to a state directory). The load comes from this process at fixed rates:

* predictions: columnar batches of 100 records, ``--batches`` a second, each record with an id;
* labels: the ids of the batch sent 5 s earlier, in one request;
* events: KServe V1 request/response CloudEvent pairs of one row, ``--events`` pairs a second;
* ``GET /metrics`` once a second, timed (what a Prometheus scrape costs the sidecar under load).

Reported: the achieved rate per endpoint against its target, p50/p99 latency per endpoint, the
server's RSS at start (after a 60 s warm-up), at the middle and at the end, and every error (any
non-2xx answer or exception). The reference in the same run is the latency of ``GET /healthz``,
the cheapest route: what the HTTP layer alone costs at that moment.

    python bench/soak.py                   # 10 minutes
    python bench/soak.py --seconds 120     # a short smoke run
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as c
import numpy as np
import orjson
import requests
import yaml

BATCH = 100


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Recorder:
    """Latencies and errors per endpoint, shared by the load threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}

    def call(self, session: requests.Session, name: str, method: str, url: str, **kw: object) -> bool:
        started = time.perf_counter()
        try:
            r = session.request(method, url, timeout=10, **kw)  # type: ignore[arg-type]
            ok, why = 200 <= r.status_code < 300, f"HTTP {r.status_code}: {r.text[:200]}"
        except requests.RequestException as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latency.setdefault(name, []).append(elapsed)
            if not ok:
                self.errors.setdefault(name, []).append(why)
        return ok


def paced(rate: float, seconds: float, stop: threading.Event, step: object, ended: list[float]) -> None:
    """Call ``step(i)`` ``rate`` times a second on a fixed schedule (no catch-up bursts)."""
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        if due - start > seconds:
            ended.append(time.monotonic())
            return
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -1.0:  # fell more than a second behind: skip, the achieved rate shows it
            i += int(-delay * rate)
            continue
        step(i)  # type: ignore[operator]
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--batches", type=float, default=20.0, help="prediction batches of 100 a second")
    ap.add_argument("--events", type=float, default=50.0, help="logger request/response pairs a second")
    args = ap.parse_args()
    c.print_machine()

    tmp = Path(tempfile.mkdtemp(prefix="mlmon-soak-"))
    c.make_baseline(20_000).save(tmp / "bench.baseline.json")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp / "mlmon.yaml").write_text(yaml.safe_dump({
        "server": {"listen": f"127.0.0.1:{port}"},
        "state": {"dir": str(tmp / "state"), "checkpoint_interval": "30s"},
        "models": [{"name": c.MODEL, "baseline": "bench.baseline.json"}],
    }))
    server = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "-c", str(tmp / "mlmon.yaml")],
                              cwd=c.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        server.kill()
        raise SystemExit("mlmon serve did not become ready: " + server.stderr.read().decode()[-2000:])

    frames = [c.make_frame(BATCH, seed=k) for k in range(20)]
    bodies = [orjson.dumps(c.columnar_body(df, c.make_predictions(BATCH, seed=k), seed=k))
              for k, df in enumerate(frames)]
    preds = [c.make_predictions(BATCH, seed=k) for k in range(20)]
    rows = [df.iloc[0].to_dict() for df in frames]
    rec = Recorder()
    stop = threading.Event()
    json_headers = {"Content-Type": "application/json"}
    sessions = {name: requests.Session() for name in ("predictions", "labels", "events", "scrape")}

    def predictions(i: int, s: requests.Session = sessions["predictions"]) -> None:
        rec.call(s, "predictions", "POST", url + "/v1/predictions", data=c.stamp_ids(bodies[i % 20], i),
                 headers=json_headers)

    def labels(i: int, s: requests.Session = sessions["labels"]) -> None:
        k = i - int(5 * args.batches)  # the batch sent 5 s ago
        if k < 0:
            return
        ids = [f"{k}-{j:05d}" for j in range(BATCH)]
        payload = {"model": c.MODEL, "labels": [{"id": x, "label": str(p)} for x, p in zip(ids, preds[k % 20],
                                                                                             strict=True)]}
        rec.call(s, "labels", "POST", url + "/v1/labels", data=orjson.dumps(payload), headers=json_headers)

    def events(i: int, s: requests.Session = sessions["events"]) -> None:
        common = {"Ce-Specversion": "1.0", "Ce-Id": f"soak-{i:09d}", "Ce-Source": "http://localhost:9081/",
                  "Ce-Inferenceservicename": c.MODEL, "Ce-Component": "predictor", **json_headers}
        row = rows[i % 20]
        rec.call(s, "events", "POST", url + "/v1/events", data=orjson.dumps({"instances": [row]}),
                 headers={**common, "Ce-Type": "org.kubeflow.serving.inference.request"})
        rec.call(s, "events", "POST", url + "/v1/events", data=orjson.dumps({"predictions": ["yes"]}),
                 headers={**common, "Ce-Type": "org.kubeflow.serving.inference.response"})

    def scrape(i: int, s: requests.Session = sessions["scrape"]) -> None:
        rec.call(s, "metrics", "GET", url + "/metrics")
        rec.call(s, "healthz (reference)", "GET", url + "/healthz")

    rss: list[tuple[float, float]] = []
    plan = [(predictions, args.batches), (labels, args.batches), (events, args.events), (scrape, 1.0)]
    ended: list[float] = []
    threads = [threading.Thread(target=paced, args=(rate, args.seconds, stop, fn, ended), daemon=True)
               for fn, rate in plan]
    started = time.monotonic()
    for t in threads:
        t.start()
    next_sample = started
    while any(t.is_alive() for t in threads):
        if time.monotonic() >= next_sample:
            rss.append((time.monotonic() - started, rss_mb(server.pid)))
            next_sample += 5
        time.sleep(0.2)
    elapsed = max(ended, default=time.monotonic()) - started
    stop.set()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)

    targets = {"predictions": args.batches * BATCH, "labels": args.batches * BATCH, "events": args.events * 2,
               "metrics": 1.0, "healthz (reference)": 1.0}
    units = {"predictions": BATCH, "labels": BATCH, "events": 1, "metrics": 1, "healthz (reference)": 1}
    print(f"\n{elapsed:.0f} s of load; mlmon serve exited {code} on SIGTERM; load average now "
          f"{c.loadavg()}\n")
    print("| endpoint | target / s | achieved / s | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    total_errors = 0
    for name in targets:
        lat = np.array(rec.latency.get(name, [math.nan])) * 1000
        achieved = len(rec.latency.get(name, [])) * units[name] / elapsed
        errors = rec.errors.get(name, [])
        total_errors += len(errors)
        print(f"| {name} | {targets[name]:,.0f} | {achieved:,.0f} | {np.percentile(lat, 50):.1f} | "
              f"{np.percentile(lat, 99):.1f} | {lat.max():.1f} | {len(errors)} |")
    warm = [m for t, m in rss if t >= min(60.0, elapsed / 4)] or [m for _, m in rss]
    print(f"\nRSS of mlmon serve: start (after warm-up) {warm[0]:.1f} MB, middle {warm[len(warm) // 2]:.1f} MB, "
          f"end {warm[-1]:.1f} MB (max {max(warm):.1f} MB over {len(rss)} samples)")
    print(f"errors: {total_errors}" + "".join(f"\n  {k}: {v[:3]}" for k, v in rec.errors.items()))


if __name__ == "__main__":
    main()
