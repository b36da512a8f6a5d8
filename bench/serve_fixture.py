"""Serve one benchmark model on 127.0.0.1 from an in-memory baseline (no files, no config).

Prints one JSON line ``{"port": N, "pid": P}`` on stdout once the socket is bound, then serves
until stdin is closed or SIGTERM/SIGINT arrives, and prints a last JSON line with its CPU time and
the time spent in the cyclic garbage collector per generation. Started by ``bench/ingest_http.py`` as a
separate process so that client and server do not share a GIL.

    /tmp/venv/bin/python bench/serve_fixture.py [--baseline-rows 50000] [--gc-freeze]
        [--models 1] [--numeric 15] [--categorical 5] [--ingest-workers N]

With ``--models N`` (N > 1) the models are ``bench_00``… (``bench/scrape.py`` serves 10 × 50 features).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time

import _common as c

from exporter.server import build_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-rows", type=int, default=50_000)
    ap.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="experiment: gc.freeze() after start-up, so full collections skip the start-up objects")
    ap.add_argument("--models", type=int, default=1, help="models served, each with the same baseline")
    ap.add_argument("--numeric", type=int, default=15, help="numeric features per model")
    ap.add_argument("--categorical", type=int, default=5, help="categorical features per model")
    ap.add_argument("--ingest-workers", type=int, help="server.ingest_workers (default: the config default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    baseline = c.make_baseline(args.baseline_rows, n_numeric=args.numeric, n_categorical=args.categorical)
    service = c.make_service(baseline, port=args.port, models=args.models, ingest_workers=args.ingest_workers)
    server = build_server(service)
    service.start()

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_stdin() -> None:  # the parent closing our stdin (or dying) stops the server
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_stdin, daemon=True).start()
    gc_time = [0.0, 0.0, 0.0]
    gc_count = [0, 0, 0]
    started = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_time[info["generation"]] += time.perf_counter() - started[0]
            gc_count[info["generation"]] += 1

    gc.callbacks.append(gc_timer)
    cpu0 = time.process_time()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    print(json.dumps({"port": server.effective_port, "pid": os.getpid(), "gc_frozen": gc.get_freeze_count()}),
          flush=True)
    try:
        server.run()
    finally:
        service.stop()
        server.close()
        # Last line on stdout: how much of the process's CPU time went to the cyclic GC.
        print(json.dumps({"cpu_seconds": time.process_time() - cpu0, "gc_seconds": gc_time,
                          "gc_collections": gc_count}), flush=True)


if __name__ == "__main__":
    main()
