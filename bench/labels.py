"""Label ingest: throughput of ``POST /v1/labels`` in batches of 1,000, and pending-store memory.

1. The sidecar runs in its own process (``serve_fixture.py``). Predictions with ids are sent
   first (columnar batches) so every label finds a pending prediction, then labels are sent in
   batches of 1,000 from one client for a bounded time. Reference in the same run: the raw cost
   of ``orjson.loads`` on the same label bodies (the parsing floor), and a plain Python
   ``dict`` join (pop the id, append the outcome) over the same ids.
2. Memory per pending prediction: ``PendingStore`` holding 1,000,000 predictions with the
   payload columns a binary classifier uses, measured with tracemalloc, against a plain ``dict``
   of the same ids to small tuples.

    /tmp/venv/bin/python bench/labels.py [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import time
import tracemalloc

import _common as c
import numpy as np
import orjson
from ingest_http import request, start_server, stop_server

from exporter.pending import PendingStore

BATCH = 1_000
TARGET = 100_000


def prediction_bodies(n_batches: int) -> list[bytes]:
    df = c.make_frame(BATCH, seed=1)
    preds = c.make_predictions(BATCH, seed=1)
    template = orjson.dumps(c.columnar_body(df, preds))
    return [c.stamp_ids(template, i) for i in range(n_batches)]


def label_bodies(n_batches: int) -> list[bytes]:
    rng = np.random.default_rng(2)
    out = []
    for i in range(n_batches):
        labels = rng.choice(c.CLASSES, BATCH).tolist()
        ids = [f"{i:08x}-{j:05d}" for j in range(BATCH)]
        out.append(orjson.dumps({"model": c.MODEL, "labels": [{"id": a, "label": b} for a, b in
                                                              zip(ids, labels, strict=True)]}))
    return out


def http_labels(seconds: float, n_batches: int) -> dict[str, float]:
    proc, port = start_server()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in prediction_bodies(n_batches):
            status, _ = request(conn, "POST", "/v1/predictions", body)
            assert status == 200, status
        bodies = label_bodies(n_batches)
        sent = matched = 0
        latencies = []
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            status, reply = request(conn, "POST", "/v1/labels", body)
            latencies.append(time.perf_counter() - t0)
            assert status == 200, (status, reply)
            sent += BATCH
            matched += reply["matched"]
            if time.perf_counter() - started > seconds:
                break
        elapsed = time.perf_counter() - started
        return {"labels_per_s": sent / elapsed, "matched": matched, "sent": sent,
                "p50_ms": c.pct(latencies, 50) * 1e3, "p99_ms": c.pct(latencies, 99) * 1e3}
    finally:
        stop_server(proc)


def references(n_batches: int) -> dict[str, float]:
    bodies = label_bodies(n_batches)
    t, _ = c.timed(lambda: [orjson.loads(b) for b in bodies])
    parse_rate = n_batches * BATCH / t
    pending = {f"{i:08x}-{j:05d}": (1, 0.7) for i in range(n_batches) for j in range(BATCH)}
    parsed = [orjson.loads(b)["labels"] for b in bodies]

    def dict_join() -> None:
        joined = []
        for labels in parsed:
            for item in labels:
                hit = pending.pop(item["id"], None)
                if hit is not None:
                    joined.append((hit, item["label"]))

    t, _ = c.timed(dict_join)
    return {"orjson_labels_per_s": parse_rate, "dict_join_labels_per_s": n_batches * BATCH / t}


def memory(n: int) -> dict[str, float]:
    ids = [f"{i:08x}-{i % 100_000:05d}-req" for i in range(n)]
    columns = {"version": np.int16, "predicted": np.int16, "proba": (np.float32, 2)}
    payload = {"version": np.zeros(BATCH, np.int16), "predicted": np.zeros(BATCH, np.int16),
               "proba": np.zeros((BATCH, 2), np.float32)}
    tracemalloc.start()
    store = PendingStore(n, 7 * 86400, columns)
    for k in range(0, n, BATCH):
        store.add(ids[k:k + BATCH], 1.0 + k / BATCH, payload)
    store_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    # A dict join must keep each id string and a distinct payload (version, class, probabilities, time).
    plain = {f"{i:08x}-{i % 100_000:05d}-req": (0, i % 2, 0.5 + i * 1e-9, 0.5, 1.0 + i) for i in range(n)}
    dict_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del plain
    return {"pending": len(store), "store_bytes_per_entry": store_bytes / n, "dict_bytes_per_entry": dict_bytes / n,
            "store_mb_per_million": store_bytes / n * 1e6 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    c.print_machine()
    n_batches = 20 if args.quick else 200
    h = http_labels(seconds=5 if args.quick else 20, n_batches=n_batches)
    r = references(n_batches)
    print(f"HTTP labels: {h['labels_per_s']:,.0f} labels/s in batches of {BATCH} ({h['matched']:,} of "
          f"{h['sent']:,} matched; p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms per request) "
          f"— target >= {TARGET:,}: {c.verdict(h['labels_per_s'] >= TARGET)}")
    print(f"  reference: orjson.loads alone {r['orjson_labels_per_s']:,.0f} labels/s "
          f"(HTTP reaches {h['labels_per_s'] / r['orjson_labels_per_s']:.2f} of it); plain dict join "
          f"{r['dict_join_labels_per_s']:,.0f} labels/s")
    m = memory(100_000 if args.quick else 1_000_000)
    print(f"pending store: {m['store_bytes_per_entry']:.1f} B per pending prediction "
          f"({m['store_mb_per_million']:.1f} MiB per million; {m['pending']:,} held) vs a dict of tuples "
          f"{m['dict_bytes_per_entry']:.1f} B ({m['dict_bytes_per_entry'] / m['store_bytes_per_entry']:.1f}x)")


if __name__ == "__main__":
    main()
