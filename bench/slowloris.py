"""Idle connections plus a slowloris client against a live sidecar: do scrapes and probes still answer?

Opens ``--idle`` TCP connections that send nothing and ``--slow`` connections that send a request
header one byte every ``--drip`` seconds (re-opening any the server closes), then probes
``/metrics`` and ``/healthz`` every 0.1 s for ``--seconds``. Reports p50/p99/max probe latency, the
probes that failed, and how many slowloris connections the server cut off. The reference in the
same run is the probe latency on the same server before the attack starts.

    .venv/bin/python bench/slowloris.py --seconds 60          # issue 9 acceptance (60 s)

The test suite runs the same ``attack`` for 10 s (tests/test_listeners.py).
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEADER = b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\nX-a: " + b"b" * 4000


@dataclass
class Report:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    slow_cut_off: int = 0

    def p(self, path: str, q: float) -> float:
        return float(np.percentile(self.latencies[path], q)) if self.latencies.get(path) else float("nan")


def probe(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, time.perf_counter() - started


def _slow_client(host: str, port: int, drip: float, stop: threading.Event, report: Report,
                 lock: threading.Lock) -> None:
    sock, sent = None, 0
    while not stop.is_set():
        try:
            if sock is None:
                sock, sent = socket.create_connection((host, port), timeout=2), 0
            sock.send(HEADER[sent % len(HEADER):sent % len(HEADER) + 1])
            sent += 1
        except OSError:
            if sock is not None:
                with lock:
                    report.slow_cut_off += 1
                sock.close()
            sock = None
        stop.wait(drip)
    if sock is not None:
        sock.close()


def attack(host: str, port: int, seconds: float, idle: int = 100, slow: int = 100, drip: float = 1.0,
           paths: tuple[str, ...] = ("/metrics", "/healthz")) -> Report:
    """Hold ``idle`` silent and ``slow`` dripping connections while probing ``paths``; bounded by ``seconds``."""
    report = Report(latencies={p: [] for p in paths}, failures={p: 0 for p in paths})
    idle_socks = [socket.create_connection((host, port), timeout=2) for _ in range(idle)]
    stop, lock = threading.Event(), threading.Lock()
    threads = [threading.Thread(target=_slow_client, args=(host, port, drip, stop, report, lock), daemon=True)
               for _ in range(slow)]
    for t in threads:
        t.start()
    try:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for path in paths:
                status, latency = probe(host, port, path)
                report.latencies[path].append(latency)
                if status != 200:
                    report.failures[path] += 1
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for s in idle_socks:
            s.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--drip", type=float, default=1.0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common

    _common.print_machine()
    service, listener = _common.start_listener()
    host, port = "127.0.0.1", listener.port
    before = Report(latencies={"/metrics": [], "/healthz": []})
    for _ in range(50):
        for path in before.latencies:
            before.latencies[path].append(probe(host, port, path)[1])
    report = attack(host, port, args.seconds, args.idle, args.slow, args.drip)
    service.stop()
    listener.close()
    print(f"\n{args.idle} idle + {args.slow} slowloris connections ({args.drip:g} s per byte) for {args.seconds:g} s; "
          f"slowloris connections cut off by the server: {report.slow_cut_off}\n")
    print("| path | probes | failed | p50 ms | p99 ms | max ms | p99 before the attack ms | ratio p99 |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for path in report.latencies:
        p99, ref = report.p(path, 99), before.p(path, 99)
        ok &= report.failures[path] == 0 and p99 < 1.0
        print(f"| {path} | {len(report.latencies[path])} | {report.failures[path]} | {report.p(path, 50) * 1e3:.1f} | "
              f"{p99 * 1e3:.1f} | {max(report.latencies[path]) * 1e3:.1f} | {ref * 1e3:.1f} | {p99 / ref:.1f}x |")
    print(f"\ntarget: 0 failures and p99 < 1 s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
