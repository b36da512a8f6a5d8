"""Memory of the sidecar under sustained ingest: RSS after 1M and after 10M records.

In-process ingest (``parse_predictions(orjson.loads(body))`` + ``ModelMonitor.ingest``) of
pre-serialised columnar batches of 10,000 records with 20 features (15 numeric, 5
categorical) plus ids, predicted classes and latencies. RSS is read from
``/proc/self/status`` (VmRSS). mlmon keeps bin counts, never raw rows, so memory should not
grow with the number of records.

Reference measured in the same run: the RSS growth of holding just 1M of those records' 20
features as a float64 array, what a raw-sample tool would keep per million records.

Target: RSS growth < 10 MB between 1M and 10M records. The run stops after ``--max-seconds``
(default 110 s) even if 10M records are not reached, and says so.

    /tmp/venv/bin/python bench/memory.py
    /tmp/venv/bin/python bench/memory.py --quick      # 0.2M and 1M records
"""

from __future__ import annotations

import argparse
import gc
import time

import _common as c
import numpy as np
import orjson

from exporter.formats.native import parse_predictions

TARGET_MB = 10.0
BATCH = 10_000


def status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb() -> float:
    return status_kb("VmRSS") * 1024 / 1e6


def label_store_mb(monitor: object) -> float | None:
    """Bytes held by the store of predictions waiting for labels, if this mlmon version has one."""
    store = getattr(getattr(monitor, "outcomes", None), "store", None)
    nbytes = getattr(store, "nbytes", None)
    if nbytes is None:
        return None
    return (nbytes() if callable(nbytes) else nbytes) / 1e6


def malloc_trim_rss() -> float | None:
    """RSS after returning free heap memory to the OS (glibc only), to tell retained from live memory."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    gc.collect()
    libc.malloc_trim(0)
    return rss_mb()


def label_store_len(monitor: object) -> int | None:
    store = getattr(getattr(monitor, "outcomes", None), "store", None)
    try:
        return len(store) if store is not None else None
    except TypeError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="checkpoints at 0.2M and 1M records")
    ap.add_argument("--max-seconds", type=float, default=110.0, help="stop ingesting after this long")
    ap.add_argument("--no-ids", action="store_true",
                    help="send no ids (so no prediction waits for a label): isolates the label-join store")
    args = ap.parse_args()
    first, last = (200_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)

    c.print_machine()
    monitor = c.make_monitor(c.make_baseline())
    bodies = []
    for k in range(8):
        df = c.make_frame(BATCH, seed=200 + k)
        body = c.columnar_body(df, c.make_predictions(BATCH, seed=200 + k), seed=k)
        if args.no_ids:
            del body["ids"]
        bodies.append(orjson.dumps(body))
    print(f"config: columnar batches of {BATCH:,} records × 20 features (+ ids, classes, latencies), "
          f"{len(bodies)} distinct bodies of {np.mean([len(b) for b in bodies]) / 1e6:.1f} MB; "
          f"checkpoints at {first:,} and {last:,} records" + ("; NO ids (label join idle)" if args.no_ids else ""))

    gc.collect()
    rss_start = rss_mb()
    checkpoints: dict[int, float] = {}
    curve: list[tuple[int, float, float, float | None, int | None]] = []
    done = 0
    t0 = time.perf_counter()
    stopped_early = False
    while done < last:
        k = done // BATCH  # fresh ids in every batch, as real traffic has
        monitor.ingest(parse_predictions(orjson.loads(c.stamp_ids(bodies[k % len(bodies)], k))))
        done += BATCH
        if done % (last // 10) == 0 or done == first:
            curve.append((done, time.perf_counter() - t0, rss_mb(), label_store_mb(monitor), label_store_len(monitor)))
        if done in (first, last):
            checkpoints[done] = rss_mb()
        if time.perf_counter() - t0 > args.max_seconds and done < last:
            stopped_early = True
            checkpoints[done] = rss_mb()
            break
    elapsed = time.perf_counter() - t0
    counted = sum(s.predictions for s in monitor.snapshot().versions.values())
    assert counted == done, (counted, done)
    print(f"ingested {done:,} records in {elapsed:.1f} s ({done / elapsed:,.0f} records/s)"
          + (f" — STOPPED at --max-seconds={args.max_seconds:g}" if stopped_early else ""))
    print(f"RSS at start (after set-up) {rss_start:.1f} MB; peak VmHWM {status_kb('VmHWM') / 1024:.1f} MB")
    for n, t, r, store, pending in curve:
        extra = "" if store is None else f"   label-join store {store:6.1f} MB holding {pending:,} pending ids"
        print(f"  {n:>11,} records  {t:6.1f} s  RSS {r:7.1f} MB{extra}")

    end = max(checkpoints)
    growth = checkpoints[end] - checkpoints[first]
    trimmed = malloc_trim_rss()
    if trimmed is not None:
        print(f"diagnostic: after gc.collect() + glibc malloc_trim(0) RSS is {trimmed:.1f} MB "
              f"({trimmed - checkpoints[end]:+.1f} MB): memory freed by mlmon but kept by the allocator")

    gc.collect()
    before = rss_mb()
    raw = np.ones((1_000_000, 20), dtype=np.float64)  # touch every page
    ref_mb = rss_mb() - before
    del raw
    print(f"reference: holding 1M records × 20 features as float64 grows RSS by {ref_mb:.1f} MB "
          f"(⇒ {ref_mb * (end - first) / 1e6:.0f} MB for the {end - first:,} records between the checkpoints)")
    print(f"load average at end {c.loadavg()}")

    print("\n| measure | value | target | met |")
    print("|---|---|---|---|")
    print(f"| RSS after {first:,} records | {checkpoints[first]:.1f} MB | — | — |")
    print(f"| RSS after {end:,} records | {checkpoints[end]:.1f} MB | — | — |")
    print(f"| growth {first:,} → {end:,} | {growth:+.1f} MB | < {TARGET_MB:g} MB | {c.verdict(growth < TARGET_MB)} |")
    print(f"| reference: raw float64 storage of the same {end - first:,} records | "
          f"{ref_mb * (end - first) / 1e6:.0f} MB | — | — |")
    print(f"| ratio growth / raw storage | {growth / (ref_mb * (end - first) / 1e6):.4f} | — | — |")
    print(f"| ingest rate (in process, parse + ingest) | {done / elapsed:,.0f} records/s | — | — |")
    if stopped_early:
        print(f"| NOTE | stopped at {done:,} records after {args.max_seconds:g} s | | |")


if __name__ == "__main__":
    main()
