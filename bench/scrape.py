"""GET /metrics latency and size for 10 models × 50 features, idle and during ingest at ~50,000 records/s.

Starts the sidecar as its own process (``bench/serve_fixture.py --models 10 --numeric 40
--categorical 10``, waitress + Flask as ``mlmon serve``), feeds every model one 1,000-record batch
and waits until every model has an evaluation with drift scores. Then it scrapes ``--scrapes``
times idle and ``--scrapes`` times while ``--clients`` other processes POST columnar batches of
1,000 records paced to ``--rate`` records/s in total (bounded by ``--ingest-seconds``). Each
scrape alternates two request forms: Prometheus's (``Accept: application/openmetrics-text…``,
``Accept-Encoding: gzip``) and a plain ``curl`` (neither header).

Reference in the same run: the same 10-model service built in this process, rendered by the
uncached path (prometheus_client's ``generate_latest`` of the whole registry, every family rebuilt
from fresh snapshots: what every scrape cost before the text cache) and by the cached path.

    .venv/bin/python bench/scrape.py [--quick] [--scrapes 60] [--ingest-seconds 30] [--rate 50000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import orjson
from ingest_http import cpu_seconds, start_server, stop_server
from prometheus_client import generate_latest

HERE = Path(__file__).resolve().parent
MODELS, NUMERIC, CATEGORICAL = 10, 40, 10
BATCH = 1_000
PROMETHEUS = {"Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "Accept-Encoding": "gzip"}
"""The headers Prometheus 2.x sends on every scrape."""
PLAIN: dict[str, str] = {}
FORMS = {"prometheus (OpenMetrics, gzip)": PROMETHEUS, "plain text, no gzip": PLAIN}
TARGET_IDLE_MS, TARGET_LOAD_MS = 50.0, 80.0


def bodies(models: list[str]) -> list[bytes]:
    df = c.make_frame(BATCH, n_numeric=NUMERIC, n_categorical=CATEGORICAL, seed=7)
    preds = c.make_predictions(BATCH, seed=7)
    return [orjson.dumps({**c.columnar_body(df, preds), "model": m}) for m in models]


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/v1/predictions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def ingest_worker(port: int, payloads: list[bytes], rate: float, seconds: float, offset: int, out: Any) -> None:
    """POST batches round-robin over the models, paced to ``rate`` records/s, for ``seconds``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    interval = BATCH / rate
    start = next_at = time.perf_counter()
    records = errors = 0
    i = 0
    while time.perf_counter() - start < seconds:
        status = post(conn, c.stamp_ids(payloads[i % len(payloads)], offset + i))
        if status == 200:
            records += BATCH
        else:
            errors += 1
        i += 1
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    out.put({"records": records, "seconds": time.perf_counter() - start, "errors": errors})


def scrape(conn: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[float, bytes, dict[str, str]]:
    t = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    dt = time.perf_counter() - t
    if resp.status != 200:
        raise SystemExit(f"GET /metrics answered {resp.status}")
    return dt, body, {k.lower(): v for k, v in resp.getheaders()}


def scrape_series(port: int, count: int, pause: float, until: float = float("inf")) -> dict[str, dict[str, Any]]:
    """``count`` scrapes per request form, interleaved, ``pause`` seconds apart, none started after
    ``until`` (``time.perf_counter()``): scrapes under load stop when the load does."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out: dict[str, dict[str, Any]] = {name: {"ms": []} for name in FORMS}
    for _ in range(count):
        if time.perf_counter() > until:
            break
        for name, headers in FORMS.items():
            dt, body, resp_headers = scrape(conn, headers)
            out[name]["ms"].append(dt * 1000)
            out[name].update(bytes=len(body), encoding=resp_headers.get("content-encoding", "identity"),
                             type=resp_headers.get("content-type", ""))
            time.sleep(pause)
    return out


def render_seconds(port: int) -> tuple[float, float]:
    """``mlmon_scrape_duration_seconds`` sum and count: render time inside the sidecar, no HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    _, body, _ = scrape(conn, PLAIN)
    values = {}
    for line in body.decode().splitlines():
        if line.startswith(("mlmon_scrape_duration_seconds_sum ", "mlmon_scrape_duration_seconds_count ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("mlmon_scrape_duration_seconds_sum", 0.0), values.get("mlmon_scrape_duration_seconds_count", 0.0)


def wait_for_evaluations(port: int, payloads: list[bytes], timeout: float) -> bytes:
    """One batch per model, then scrape until every model shows drift flags; the plain body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i, body in enumerate(payloads):
        if post(conn, c.stamp_ids(body, 10_000_000 + i)) != 200:
            raise SystemExit("warm-up batch refused")
    expected = MODELS * (NUMERIC + CATEGORICAL + 1)  # every feature and the prediction
    deadline = time.monotonic() + timeout
    while True:
        _, body, _ = scrape(conn, PLAIN)
        flags = body.count(b"\nmlmon_feature_drift_detected{")
        if flags >= expected:
            return body
        if time.monotonic() > deadline:
            raise SystemExit(f"only {flags} of {expected} drift flags after {timeout:.0f} s")
        time.sleep(0.5)


def in_process_reference(payloads: list[bytes], reps: int) -> dict[str, Any]:
    """The same service in this process: uncached generate_latest vs the cached exposition."""
    from exporter.formats.native import parse_predictions

    baseline = c.make_baseline(20_000, n_numeric=NUMERIC, n_categorical=CATEGORICAL)
    service = c.make_service(baseline, models=MODELS)
    for i, body in enumerate(payloads):
        batch = parse_predictions(orjson.loads(c.stamp_ids(body, i)))
        service.monitors[batch.model].ingest(batch)
    for monitor in service.monitors.values():
        monitor.evaluate()

    def exposition(*headers: str | None) -> bytes:
        try:
            out = service.selfmon.exposition(*headers)
        except TypeError:  # a checkout before the text cache: exposition() takes no headers
            out = service.selfmon.exposition()
        return getattr(out, "body", out)

    runs = {"uncached: generate_latest(registry)": lambda: generate_latest(service.registry),
            "cached, plain text": lambda: exposition(None, None),
            "cached, OpenMetrics + gzip": lambda: exposition(PROMETHEUS["Accept"], "gzip")}
    out: dict[str, Any] = {}
    for name, fn in runs.items():
        fn()  # the first call fills the caches (and prefixes) once
        times = [c.timed(fn)[0] * 1000 for _ in range(reps)]
        out[name] = {"median_ms": c.med(times), "p95_ms": c.pct(times, 95), "bytes": len(fn())}
    return out


def stats(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "median": c.med(ms), "p95": c.pct(ms, 95), "p99": c.pct(ms, 99), "max": max(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 scrapes per phase, 6 s of ingest")
    ap.add_argument("--scrapes", type=int, help="scrapes per request form and phase (default 60, quick 10)")
    ap.add_argument("--ingest-seconds", type=float, help="upper bound of the ingest phase (default 30, quick 6)")
    ap.add_argument("--rate", type=float, default=50_000, help="records/s the ingest clients aim at, in total")
    ap.add_argument("--clients", type=int, default=3, help="ingest client processes (2 fall short of 50k/s here)")
    ap.add_argument("--reps", type=int, default=20, help="in-process renders per path")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    scrapes = args.scrapes or (10 if args.quick else 60)
    ingest_seconds = args.ingest_seconds or (6.0 if args.quick else 30.0)

    machine = c.print_machine()
    models = c.model_names(MODELS)
    payloads = bodies(models)
    proc, port = start_server(["--models", str(MODELS), "--numeric", str(NUMERIC),
                               "--categorical", str(CATEGORICAL), "--baseline-rows", "20000"])
    results: dict[str, Any] = {"machine": machine, "models": MODELS, "features": NUMERIC + CATEGORICAL}
    try:
        first = wait_for_evaluations(port, payloads, timeout=60)
        results["samples"] = sum(1 for line in first.splitlines() if line and not line.startswith(b"#"))
        cpu0 = cpu_seconds(proc.pid)
        sum0, count0 = render_seconds(port)
        results["idle"] = scrape_series(port, scrapes, pause=0.05)
        results["idle_server_cpu_ms_per_scrape"] = (cpu_seconds(proc.pid) - cpu0) * 1000 / (scrapes * len(FORMS))
        sum1, count1 = render_seconds(port)
        results["idle_render_ms_per_scrape"] = (sum1 - sum0) * 1000 / max(1.0, count1 - count0)

        queue: Any = mp.Queue()
        workers = [mp.Process(target=ingest_worker, args=(port, payloads, args.rate / args.clients, ingest_seconds,
                                                          (k + 1) * 1_000_000, queue)) for k in range(args.clients)]
        load_ends = time.perf_counter() + ingest_seconds - 0.5
        for w in workers:
            w.start()
        time.sleep(1.0)  # let the ingest reach its pace before the first scrape
        pause = max(0.05, (ingest_seconds - 2.0) / (scrapes * len(FORMS)) - 0.05)
        load_started = time.perf_counter()
        results["load"] = scrape_series(port, scrapes, pause=pause, until=load_ends)
        results["load_scrape_seconds"] = time.perf_counter() - load_started
        reports = [queue.get(timeout=ingest_seconds + 120) for _ in workers]
        for w in workers:
            w.join(timeout=30)
        results["ingest"] = {"records": sum(r["records"] for r in reports),
                             "records_per_s": sum(r["records"] / r["seconds"] for r in reports),
                             "errors": sum(r["errors"] for r in reports)}
        results["loadavg_end"] = c.loadavg()
    finally:
        stop_server(proc)
    results["reference"] = in_process_reference(payloads, args.reps)
    report(results, scrapes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def report(r: dict[str, Any], scrapes: int) -> None:
    print(f"\n{r['models']} models x {r['features']} features, drift.export_bins on (default): "
          f"{r['samples']:,} samples per scrape")
    ing = r["ingest"]
    print(f"ingest during the load phase: {ing['records_per_s']:,.0f} records/s achieved "
          f"({ing['records']:,} records, {ing['errors']} refused requests); load average at end {r['loadavg_end']}")
    print(f"sidecar CPU per idle scrape: {r['idle_server_cpu_ms_per_scrape']:.1f} ms (with its evaluation timer and "
          f"HTTP); render time in it (mlmon_scrape_duration_seconds): {r['idle_render_ms_per_scrape']:.1f} ms\n")
    print("| request | phase | scrapes | median ms | p95 ms | p99 ms | max ms | body bytes | encoding |")
    print("|---|---|---|---|---|---|---|---|---|")
    for phase in ("idle", "load"):
        for name, row in r[phase].items():
            s = stats(row["ms"])
            print(f"| {name} | {phase} | {s['n']} | {s['median']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | "
                  f"{s['max']:.1f} | {row['bytes']:,} | {row['encoding']} |")
    ref = r["reference"]
    print("\nin process, same service state (reference measured in this run):\n")
    print("| render path | median ms | p95 ms | bytes |")
    print("|---|---|---|---|")
    for name, row in ref.items():
        print(f"| {name} | {row['median_ms']:.1f} | {row['p95_ms']:.1f} | {row['bytes']:,} |")
    uncached = ref["uncached: generate_latest(registry)"]["median_ms"]
    print(f"\nratio uncached / cached in process: plain {uncached / ref['cached, plain text']['median_ms']:.1f}x, "
          f"OpenMetrics + gzip {uncached / ref['cached, OpenMetrics + gzip']['median_ms']:.1f}x")
    print("\n| target | figure | met? |")
    print("|---|---|---|")
    for phase, target in (("idle", TARGET_IDLE_MS), ("load", TARGET_LOAD_MS)):
        worst = max(c.med(row["ms"]) for row in r[phase].values())
        extra = f" at {ing['records_per_s']:,.0f} records/s" if phase == "load" else ""
        print(f"| median scrape <= {target:.0f} ms {phase}{extra} | {worst:.1f} ms (slower request form) | "
              f"{c.verdict(worst <= target)} |")
    if scrapes < 30:
        print("(short run: percentiles from few scrapes)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
