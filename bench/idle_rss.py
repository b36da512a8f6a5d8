"""Idle footprint of ``mlmon serve`` with one model: resident memory and time until ready.

A sidecar runs next to every model replica, so what it costs while idle is paid many times.
The script writes a one-model config and a baseline (built here, in this process), starts
``python -m exporter.cli serve`` as a child, waits for ``/readyz``, lets it settle and reads
``VmRSS`` from ``/proc``. It also reports whether pandas was imported by the server process.

    python bench/idle_rss.py                              # the tree this script lives in
    python bench/idle_rss.py --tree /tmp/mlmon-main       # another checkout, same interpreter

The references measured in the same run are bare interpreters: one importing the libraries the
server needs (numpy, scipy, flask, httptools, prometheus_client, orjson, yaml), and the same plus
pandas, so the share of the footprint that pandas costs is visible next to the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _common as c

FLOOR = "import numpy, scipy.special, flask, prometheus_client, httptools, orjson, yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def has_pandas(pid: int) -> bool:
    return any("/pandas/" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def measure_serve(tree: Path, workdir: Path, settle: float) -> dict[str, float | bool]:
    port = free_port()
    cfg = workdir / "mlmon.yaml"
    cfg.write_text(f"server:\n  listen: 127.0.0.1:{port}\nmodels:\n  - name: {c.MODEL}\n"
                   f"    baseline: {workdir / 'baseline.json'}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "-c", str(cfg), "--log-level", "WARNING"],
                            cwd=tree, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlmon serve did not become ready") from None
                time.sleep(0.05)
        ready = time.perf_counter() - started
        time.sleep(settle)
        return {"rss_mb": rss_mb(proc.pid), "ready_seconds": ready, "pandas_mapped": has_pandas(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure_floor(extra: str = "") -> float:
    proc = subprocess.Popen([sys.executable, "-c", f"{FLOOR}{extra}; import time; time.sleep(30)"])
    try:
        time.sleep(3)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=c.ROOT, help="source tree to run (default: this checkout)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        c.make_baseline(20_000).save(workdir / "baseline.json")
        runs = [measure_serve(args.tree.resolve(), workdir, args.settle) for _ in range(args.runs)]
    floor = measure_floor()
    floor_pandas = measure_floor(", pandas")
    rss = sorted(float(r["rss_mb"]) for r in runs)
    ready = sorted(float(r["ready_seconds"]) for r in runs)
    out = {"tree": str(args.tree), "machine": c.machine(), "runs": runs,
           "median_rss_mb": rss[len(rss) // 2], "median_ready_seconds": ready[len(ready) // 2],
           "pandas_mapped": any(r["pandas_mapped"] for r in runs),
           "reference_floor_rss_mb": floor, "reference_floor_with_pandas_rss_mb": floor_pandas,
           "rss_over_floor": rss[len(rss) // 2] / floor}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
