"""``MlmonClient.record()`` cost on the calling thread (the model server's request thread).

A record of 20 features (15 floats, 5 strings), a predicted class and a latency, recorded
100,000 times while the client's sender thread posts to a live sidecar in this process' sibling
(``bench/serve_fixture.py``). Reported: median, p99 and p99.9 of the per-call time.

Reference measured in the same run: ``orjson.dumps`` of the same record alone (the copy that
``record()`` makes), and appending a ``dict.copy()`` to a list (the cheapest possible hand-off).
Target: median < 10 µs.

    .venv/bin/python bench/client.py
"""

from __future__ import annotations

import argparse
import time

import _common as c
import numpy as np
import orjson
from ingest_http import start_server, stop_server

from exporter.client import MlmonClient

TARGET_MEDIAN_US = 10.0


def timed(fn, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    c.print_machine()
    df = c.make_frame(1000, seed=1)
    rows = df.to_dict("records")
    proc, port = start_server()
    try:
        client = MlmonClient(f"http://127.0.0.1:{port}", c.MODEL, "v1", flush_interval=0.05,
                             max_queue=args.calls + 1)
        record = timed(lambda i: client.record(rows[i % 1000], "yes", latency_seconds=0.01), args.calls)
        stats = client.close(timeout=30)
    finally:
        stop_server(proc)
    dumps = timed(lambda i: orjson.dumps({"features": rows[i % 1000], "prediction": "yes",
                                          "latency_seconds": 0.01}, option=orjson.OPT_SERIALIZE_NUMPY), args.calls)
    sink: list[dict] = []
    copy = timed(lambda i: sink.append(rows[i % 1000].copy()), args.calls)
    print(f"client stats after close: {stats}")
    print()
    print("| measure | median µs | p99 µs | p99.9 µs | max µs |")
    print("|---|---|---|---|---|")
    for name, t in (("record()", record), ("orjson.dumps alone", dumps), ("dict.copy + list.append", copy)):
        print(f"| {name} | {np.median(t):.2f} | {np.quantile(t, 0.99):.2f} | {np.quantile(t, 0.999):.2f} "
              f"| {t.max():.1f} |")
    med = float(np.median(record))
    print(f"\nrecord() median {med:.2f} µs, {med / float(np.median(dumps)):.2f}× orjson.dumps alone; "
          f"target < {TARGET_MEDIAN_US} µs: {'MET' if med < TARGET_MEDIAN_US else 'NOT MET'}")


if __name__ == "__main__":
    main()
