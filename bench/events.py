"""Payload-logger events: how many CloudEvents per second the events path takes on one core.

Paired KServe V1 (``instances`` / ``predictions``) and Open Inference Protocol V2 (``inputs`` /
``outputs``) events with 20 features (15 numeric, 5 categorical), batches of 1 and 64 rows, in
binary CloudEvents mode with the headers KServe's logger sends. Each event runs the sidecar's
path for ``POST /v1/events`` without the HTTP layer: ``decode_event`` (headers + JSON body) →
``Service.handle_event`` (component filter, routing, pairing, dedupe, coalescing, ingest into the
monitor, periodic flush). One thread, one process: one core.

With ``--http`` the same events also go over HTTP to a sidecar process (the server ``mlmon serve``
runs) from 8 concurrent keep-alive connections of a client process, as a logger delivers them, and
the server's CPU time gives its events per CPU-second: one core's capacity.

Reference measured in the same run: ``orjson.loads`` of the same bodies (the JSON parse every
event needs at least). Target: >= 5,000 events/s for single-row events on one core; the "met"
column judges the over-HTTP figure when ``--http`` is given, else the in-process one.

    .venv/bin/python bench/events.py            # ~5 s per case
    .venv/bin/python bench/events.py --quick    # ~1 s per case
    .venv/bin/python bench/events.py --profile v2:1   # cProfile of one case
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import pstats
import time
from typing import Any

import _common as c
import orjson

from exporter.formats import decode_event
from exporter.service import Service

TARGET_SINGLE_ROW = 5_000


def v1_bodies(rows: list[dict[str, Any]], preds: list[str]) -> tuple[bytes, bytes]:
    return orjson.dumps({"instances": rows}), orjson.dumps({"predictions": preds})


def v2_bodies(rows: list[dict[str, Any]], preds: list[str]) -> tuple[bytes, bytes]:
    names = list(rows[0])
    inputs = [{"name": n, "shape": [len(rows)], "datatype": "BYTES" if isinstance(rows[0][n], str) else "FP64",
               "data": [r[n] for r in rows]} for n in names]
    outputs = [{"name": "label", "shape": [len(rows)], "datatype": "BYTES", "data": preds}]
    return (orjson.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}),
            orjson.dumps({"model_name": c.MODEL, "model_version": "v1", "outputs": outputs}))


def make_events(protocol: str, batch: int, n_pairs: int) -> list[tuple[dict[str, str], bytes]]:
    """``n_pairs`` request/response pairs (distinct bodies cycled, fresh ce-id per pair)."""
    distinct = 50
    bodies = []
    for k in range(distinct):
        df = c.make_frame(batch, seed=k)
        rows = df.to_dict("records")
        preds = [str(p) for p in c.make_predictions(batch, seed=k)]
        bodies.append((v1_bodies if protocol == "v1" else v2_bodies)(rows, preds))
    events = []
    for i in range(n_pairs):
        req, resp = bodies[i % distinct]
        common = {"Ce-Specversion": "1.0", "Ce-Id": f"evt-{i:09d}", "Ce-Source": "http://localhost:9081/",
                  "Ce-Inferenceservicename": c.MODEL, "Ce-Namespace": "default", "Ce-Component": "predictor",
                  "Ce-Endpoint": "", "Content-Type": "application/json"}
        events.append(({**common, "Ce-Type": "org.kubeflow.serving.inference.request",
                        "Ce-Time": "2024-03-05T10:00:00.000001Z"}, req))
        events.append(({**common, "Ce-Type": "org.kubeflow.serving.inference.response",
                        "Ce-Time": "2024-03-05T10:00:00.010001Z"}, resp))
    return events


def run_events(service: Service, events: list[tuple[dict[str, str], bytes]], seconds: float) -> tuple[float, int]:
    """Feed events until ``seconds`` pass (checked every 256 events); returns (events/s, events)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    n = len(events)
    while True:
        for headers, body in events[done % n:done % n + 256]:
            service.handle_event(decode_event(headers, body))
        done += min(256, n - done % n)
        if time.perf_counter() >= deadline:
            break
    service.flush_events()                       # the last micro-batch is part of the work
    service.ingest_batches(service.joiner.drain())
    return done / (time.perf_counter() - start), done


def run_events_cpu(service: Service, events: list[tuple[dict[str, str], bytes]], seconds: float) -> float:
    """Events per CPU-second of this (single-threaded) process: one core's capacity, less
    sensitive than wall-clock time to other work on a shared machine."""
    cpu0 = time.process_time()
    _, done = run_events(service, events, seconds)
    return done / (time.process_time() - cpu0)


def _raw(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _load(port: int, streams: list[list[bytes]], seconds: float, out: Any) -> None:
    """Client process: one asyncio connection per stream, each sending its requests one after the
    other (a logger's concurrent deliveries); reports (answered, non-202 answers, seconds)."""
    import asyncio

    async def stream(requests: list[bytes], deadline: float, counts: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for raw in requests:
            if time.perf_counter() > deadline:
                break
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            counts[0] += 1
            counts[1] += not head.startswith(b"HTTP/1.1 202")
        writer.close()

    async def main() -> None:
        counts = [0, 0]
        start = time.perf_counter()
        await asyncio.gather(*(stream(s, start + seconds, counts) for s in streams))
        out.put((counts[0], counts[1], time.perf_counter() - start))

    asyncio.run(main())


def run_http(events: list[tuple[dict[str, str], bytes]], seconds: float, connections: int = 8,
             ) -> tuple[float, float, float]:
    """The same events over HTTP to a sidecar process (the server ``mlmon serve`` runs), from a
    client process with ``connections`` concurrent keep-alive connections, as a payload logger
    delivers: each inference's request and response event on one connection, in order.

    Returns (events/s wall clock, events per server CPU-second, ``GET /healthz`` per server
    CPU-second: the HTTP stack's own floor)."""
    import multiprocessing as mp

    from ingest_http import cpu_seconds, start_server, stop_server

    raws = [_raw(h, b) for h, b in events]
    streams: list[list[bytes]] = [[] for _ in range(connections)]
    for pair in range(len(raws) // 2):  # pairs round-robin over the connections
        streams[pair % connections] += raws[2 * pair:2 * pair + 2]
    proc, port = start_server()
    try:
        out: Any = mp.Queue()
        cpu0 = cpu_seconds(proc.pid)
        client = mp.Process(target=_load, args=(port, streams, seconds, out))
        client.start()
        done, failed, wall = out.get(timeout=seconds + 60)
        client.join()
        cpu = cpu_seconds(proc.pid) - cpu0
        assert failed == 0, f"{failed} events were not answered 202"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        cpu1, probes = cpu_seconds(proc.pid), 0
        deadline = time.perf_counter() + min(seconds, 2.0)
        while time.perf_counter() < deadline:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            probes += 1
        floor = probes / max(cpu_seconds(proc.pid) - cpu1, 1e-9)
        conn.close()
    finally:
        stop_server(proc)
    return done / wall, done / cpu if cpu > 0 else float("nan"), floor


def run_parse(events: list[tuple[dict[str, str], bytes]], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _, body in events[:1024]:
            orjson.loads(body)
        done += min(1024, len(events))
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per case")
    parser.add_argument("--quick", action="store_true", help="1 s per case")
    parser.add_argument("--http", action="store_true", help="also send the events over HTTP to a sidecar process")
    parser.add_argument("--profile", metavar="CASE", help="cProfile one case, e.g. v1:1 or v2:64")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    c.print_machine()
    baseline = c.make_baseline(20_000)
    rows = []
    for protocol in ("v1", "v2"):
        for batch in (1, 64):
            pairs = 40_000 if batch == 1 else 2_000
            events = make_events(protocol, batch, pairs)
            service = c.make_service(baseline)
            if args.profile == f"{protocol}:{batch}":
                prof = cProfile.Profile()
                prof.enable()
                run_events(service, events, seconds)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
                print(out.getvalue())
                service = c.make_service(baseline)
            parse = run_parse(events, seconds)
            rate, done = run_events(service, events, seconds)
            ingested = sum(s.predictions for s in service.monitors[c.MODEL].snapshot().versions.values())
            paired = service.joiner.stats()[c.MODEL]["paired"]
            assert ingested == paired * batch, (ingested, paired, batch)
            per_cpu = run_events_cpu(c.make_service(baseline), events, seconds)
            http = run_http(events, seconds) if args.http else (float("nan"),) * 3
            rows.append((protocol, batch, rate, per_cpu, parse, http))
            print(f"{protocol} batch={batch:>2}: {rate:,.0f} events/s wall ({rate * batch / 2:,.0f} records/s), "
                  f"{per_cpu:,.0f} events per CPU-second; orjson.loads alone {parse:,.0f} events/s "
                  f"(ratio {rate / parse:.3f}); {done:,} events"
                  + (f"; over HTTP {http[0]:,.0f} events/s, {http[1]:,.0f} per server CPU-second (GET /healthz "
                     f"{http[2]:,.0f} per server CPU-second)" if args.http else ""))
    print()
    print("| protocol | rows/event | events/s (wall) | events per CPU-s | records/s (wall) | orjson.loads events/s "
          "| ratio | over HTTP events/s | HTTP per server CPU-s | GET /healthz per server CPU-s | target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for protocol, batch, rate, per_cpu, parse, http in rows:
        target = f"≥ {TARGET_SINGLE_ROW:,}" if batch == 1 else "—"
        judged = http[1] if args.http else per_cpu  # one core's capacity, over HTTP when measured
        met = ("MET" if judged >= TARGET_SINGLE_ROW else "NOT MET") if batch == 1 else "—"
        print(f"| {protocol} | {batch} | {rate:,.0f} | {per_cpu:,.0f} | {rate * batch / 2:,.0f} | {parse:,.0f} "
              f"| {rate / parse:.3f} | {http[0]:,.0f} | {http[1]:,.0f} | {http[2]:,.0f} | {target} | {met} |")


if __name__ == "__main__":
    main()
