"""Ingest throughput over HTTP: ``POST /v1/predictions`` with 1,000-record batches.

Records have 20 features (15 numeric, 5 categorical) plus an id, a predicted class and a
latency, in the row form and in the columnar form of the native API. The sidecar runs in a
separate process (``bench/serve_fixture.py``, the same server and app as ``mlmon serve``
runs) so that client and server do not share a GIL; the bodies are serialised with orjson
before the clock starts and sent by 1 and 2 client processes over keep-alive connections to
127.0.0.1, each run bounded in time.

References measured in the same run, in this process, before the server starts:
- ``orjson.loads`` of the same bodies: the parsing floor (records/s);
- ``prepare_body`` + ``ModelMonitor.apply`` in process: the server's work without HTTP.

The sidecar, and this process for its references, run with ``exporter.malloc``'s settings, as
``mlmon serve`` does. ``--ingest-workers N`` sets the sidecar's ``server.ingest_workers``.

Targets (issue 12): >= 100,000 records/s (row form), >= 300,000 records/s and <= 3 µs of server CPU
per record (columnar form). The columnar form is also sent as an Arrow IPC stream (form "arrow",
``mlmon[arrow]``), judged by the columnar targets; its floor is pyarrow's ``read_all``.

    /tmp/venv/bin/python bench/ingest_http.py            # 10 s per run
    /tmp/venv/bin/python bench/ingest_http.py --quick    # 2 s per run, smoke test
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import multiprocessing as mp
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import orjson

from exporter.formats._common import load_json
from exporter.formats.arrow import MEDIA_TYPE as ARROW_STREAM
from exporter.formats.arrow import available as arrow_available
from exporter.formats.arrow import load_arrow
from exporter.formats.fastjson import load_columnar
from exporter.formats.native import parse_predictions
from exporter.malloc import keep_freed_buffers
from exporter.offload import prepare_body

TARGETS = {"row": 100_000, "columnar": 300_000, "arrow": 300_000}  # issue 12 (arrow: the columnar form's target)
CPU_TARGETS = {"columnar": 3.0, "arrow": 3.0}  # server CPU µs per record, issue 12
CONTENT_TYPES = {"row": "application/json", "columnar": "application/json", "arrow": ARROW_STREAM}
HERE = Path(__file__).resolve().parent


def make_bodies(n_bodies: int, batch: int, forms: list[str]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {form: [] for form in forms}
    for k in range(n_bodies):
        df = c.make_frame(batch, seed=100 + k)
        preds = c.make_predictions(batch, seed=100 + k)
        for form in forms:
            if form == "arrow":
                out[form].append(c.arrow_body(df, preds, seed=k))
            else:
                body = c.row_body(df, preds, seed=k) if form == "row" else c.columnar_body(df, preds, seed=k)
                out[form].append(orjson.dumps(body))
    return out


def read_arrow(body: bytes) -> Any:
    """The Arrow form's floor, as ``orjson.loads`` is the JSON forms': reading the stream."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(body)).read_all()


def rate_in_process(fn: Any, bodies: list[bytes], batch: int, seconds: float, first_request: int) -> float:
    """Records/s of ``fn(body)`` cycling over the bodies (with fresh ids) for about ``seconds``
    of ``fn`` time; stamping the ids is not timed."""
    for j, body in enumerate(bodies[:2]):  # warm-up
        fn(c.stamp_ids(body, first_request + j))
    done, i, busy = 0, 2, 0.0
    while busy < seconds or i < len(bodies):
        body = c.stamp_ids(bodies[i % len(bodies)], first_request + i)
        t = time.perf_counter()
        fn(body)
        busy += time.perf_counter() - t
        i += 1
        done += batch
    return done / busy


# ---- server process ---------------------------------------------------------------------

def start_server(extra: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_fixture.py"), *(extra or [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(c.ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the sidecar fixture did not start (see its stderr above)")
    return proc, int(json.loads(line)["port"])


def stop_server(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    """Stop the fixture; return its closing report (CPU and GC seconds) if it gave one."""
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()  # the fixture stops when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=5)
    assert proc.stdout is not None
    lines = proc.stdout.read().strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def sys_seconds(pid: int) -> float:
    """stime of a process: its time in the kernel (for a server mostly the TCP receive path)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime of a process from /proc/<pid>/stat, with (by default) that of its live child
    processes: the sidecar's ingest workers (exporter/offload.py) are part of its cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not children:
        return own
    kids: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += (task / "children").read_text().split()
        except OSError:
            continue
    for kid in kids:
        try:
            own += cpu_seconds(int(kid))
        except OSError:  # exited meanwhile
            continue
    return own


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, orjson.loads(data) if data else None


# ---- client processes -------------------------------------------------------------------

def client_worker(port: int, bodies: list[bytes], batch: int, start_at: float, seconds: float,
                  offset: int, out: Any, content_type: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    latencies: list[float] = []
    accepted = failures = 0
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    deadline = t0 + seconds
    i = 0
    while time.perf_counter() < deadline:
        body = c.stamp_ids(bodies[i % len(bodies)], (offset + 1) << 24 | i)
        i += 1
        s = time.perf_counter()
        status, reply = request(conn, "POST", "/v1/predictions", body, content_type)
        latencies.append(time.perf_counter() - s)
        if status == 200 and reply["accepted"] == batch and not reply["rejected"]:
            accepted += batch
        else:
            failures += 1
    wall = time.perf_counter() - t0
    conn.close()
    out.put({"accepted": accepted, "failures": failures, "requests": len(latencies),
             "latencies": latencies, "wall": wall})


def http_run(port: int, pid: int, bodies: list[bytes], batch: int, clients: int, seconds: float,
             run_no: int, content_type: str) -> dict[str, Any]:
    """``clients`` processes POST for ``seconds``; client k of run r stamps ids (8r+k+1) << 24 | i."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=client_worker,
                         args=(port, bodies, batch, start_at, seconds, run_no * 8 + k, out, content_type))
             for k in range(clients)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0, own0, sys0, t0 = cpu_seconds(pid), cpu_seconds(pid, children=False), sys_seconds(pid), time.perf_counter()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    wall = time.perf_counter() - t0
    cpu1, own1, sys1 = cpu_seconds(pid), cpu_seconds(pid, children=False), sys_seconds(pid)
    for p in procs:
        p.join(timeout=10)
    accepted = sum(r["accepted"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    return {
        "clients": clients, "records": accepted, "requests": len(lat),
        "failures": sum(r["failures"] for r in results), "wall": wall,
        "rate": accepted / wall,
        "mb_per_s": len(lat) * sum(map(len, bodies)) / len(bodies) / wall / 1e6,
        "p50_ms": c.pct(lat, 50) * 1e3, "p99_ms": c.pct(lat, 99) * 1e3,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_record": (cpu1 - cpu0) / max(accepted, 1) * 1e6,
        "serving_process_cpu_us_per_record": (own1 - own0) / max(accepted, 1) * 1e6,
        "serving_process_sys_us_per_record": (sys1 - sys0) / max(accepted, 1) * 1e6,
    }


# ---- where the time goes ----------------------------------------------------------------

def stage_breakdown(monitor: Any, body: bytes, reps: int, arrow: bool) -> dict[str, float]:
    """Milliseconds per batch of each stage of the server's path (``prepare_body`` then ``apply``:
    best of 5 × ``reps``, fresh ids each call)."""
    seq = [0xFD000000]
    numeric = {monitor.name: monitor.numeric_features}.get
    categorical = {monitor.name: monitor.categorical_features}.get

    def fresh() -> bytes:
        seq[0] += 1
        return c.stamp_ids(body, seq[0])

    def load(raw: bytes) -> Any:  # what prepare_body does with an uncompressed body
        if arrow:
            return load_arrow(raw, lambda model: numeric(model, frozenset()),
                              lambda model: categorical(model, frozenset()))
        data = load_columnar(raw, lambda model: numeric(model, frozenset()))
        return load_json(raw) if data is None else data

    def best(fn: Any, prepare: Any) -> float:
        out = []
        for _ in range(5):
            args = [prepare() for _ in range(reps)]
            t = time.perf_counter()
            for a in args:
                fn(a)
            out.append((time.perf_counter() - t) / reps * 1e3)
        return min(out)

    def free() -> float:  # dropping the parsed body and the batch: the request's objects are freed
        out = []
        for _ in range(5):
            items = []
            for _ in range(reps):
                data = load(fresh())
                batch = parse_predictions(data)
                monitor.ingest(batch)
                items.append((data, batch))
            del data, batch
            t = time.perf_counter()
            while items:
                items.pop()
            out.append((time.perf_counter() - t) / reps * 1e3)
        return min(out)

    return {
        "load": best(load, fresh),
        "parse_predictions": best(parse_predictions, lambda: load(fresh())),
        "prepare": best(monitor.prepare, lambda: parse_predictions(load(fresh()))),
        "apply": best(monitor.apply, lambda: monitor.prepare(parse_predictions(load(fresh())))),
        "free": free(),
    }


def py_spy(spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200",
                             "-f", "raw", "-o", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise_spy(path: Path, top: int = 15) -> str:
    """Own and inclusive shares of the busy samples in a py-spy raw (collapsed) profile."""
    import re

    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or re.match(r"(select|poll|wait|_wait_for_tstate_lock|handler_thread) ", frames[-1]):
            continue  # idle: a thread waiting for work or for the socket
        n = int(count)
        busy += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not busy:
        return "(no busy samples)"
    lines = [f"{busy} busy samples; own time (C calls are charged to the Python frame that made them):"]
    lines += [f"  {100 * n / busy:5.1f}%  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("inclusive time:")
    lines += [f"  {100 * n / busy:5.1f}%  {f}" for f, n in sorted(incl.items(), key=lambda kv: -kv[1])
              if not f.startswith(("_bootstrap", "run (threading", "Thread."))][:top]
    return "\n".join(lines)


# ---- profile ----------------------------------------------------------------------------

def profile(fn: Any, body: bytes, runs: int, top: int) -> str:
    bodies = [c.stamp_ids(body, 0xFE000000 + j) for j in range(runs)]
    prof = cProfile.Profile()
    prof.enable()
    for b in bodies:
        fn(b)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in buf.getvalue().splitlines() if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s per run, fewer bodies")
    ap.add_argument("--seconds", type=float, help="duration of each HTTP run (default 10, quick 2)")
    ap.add_argument("--clients", default="1,2", help="client process counts to run, comma-separated")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--forms", default="row,columnar,arrow",
                    help="body forms to run, comma-separated (arrow needs pyarrow: pip install 'mlmon[arrow]')")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true", help="experiment: start the sidecar with gc.freeze() "
                    "after start-up (not what mlmon serve does today)")
    ap.add_argument("--ingest-workers", type=int, help="the sidecar's server.ingest_workers (default: its default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy binary: sample the sidecar process during the "
                    "1-client runs (pip install --target /tmp/pyspy py-spy)")
    args = ap.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    ref_seconds = 1.0 if args.quick else 3.0
    n_bodies = 4 if args.quick else 16
    batch = args.batch
    clients = [int(x) for x in args.clients.split(",")]

    keep_freed_buffers()
    m = c.print_machine()
    print(f"config: batch={batch} records, 20 features (15 numeric, 5 categorical) + id, class, latency; "
          f"{n_bodies} distinct bodies per form; {seconds:g} s per HTTP run; clients={clients}"
          + ("; EXPERIMENT: sidecar started with gc.freeze()" if args.gc_freeze else ""))
    forms = [f for f in args.forms.split(",") if f != "arrow" or arrow_available()]
    if forms != args.forms.split(","):
        print("pyarrow is not installed: the arrow form is skipped")
    bodies = make_bodies(n_bodies, batch, forms)
    for form, bs in bodies.items():
        print(f"body size {form}: {sum(map(len, bs)) / len(bs) / 1024:.0f} KiB per {batch} records")

    monitor = c.make_monitor(c.make_baseline())

    def ingester(form: str) -> Any:  # the server's path: exporter/offload.py's prepare_body, then apply
        def ingest(body: bytes) -> None:
            kind, _, prepared = prepare_body(body, None, 1 << 30, {monitor.name: monitor}, CONTENT_TYPES[form])
            assert kind == "ok", (kind, prepared)
            monitor.apply(prepared)
        return ingest

    refs: dict[str, dict[str, float]] = {}
    for form, bs in bodies.items():
        refs[form] = {
            "floor": rate_in_process(read_arrow if form == "arrow" else orjson.loads, bs, batch, ref_seconds,
                                     0xF0000000),
            "in_process": rate_in_process(ingester(form), bs, batch, ref_seconds, 0xF1000000),
        }
        floor = "pyarrow read_all" if form == "arrow" else "orjson.loads"
        print(f"reference {form:8s}: {floor} {refs[form]['floor']:>12,.0f} records/s   "
              f"parse+ingest in process {refs[form]['in_process']:>10,.0f} records/s")

    extra = ["--gc-freeze"] if args.gc_freeze else []
    if args.ingest_workers is not None:
        extra += ["--ingest-workers", str(args.ingest_workers)]
    proc, port = start_server(extra)
    runs: list[dict[str, Any]] = []
    spies: dict[str, Path] = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for form in bodies:  # warm-up and a correctness check of the payloads
            for j, body in enumerate(bodies[form][:2]):
                stamped = c.stamp_ids(body, 0xFF000000 + 8 * forms.index(form) + j)
                status, reply = request(conn, "POST", "/v1/predictions", stamped, CONTENT_TYPES[form])
                if status != 200 or reply["accepted"] != batch or reply["rejected"]:
                    raise SystemExit(f"warm-up {form} request failed: {status} {str(reply)[:300]}")
        if args.ingest_workers:
            time.sleep(3)  # the first large batch started the sidecar's ingest workers: let them come up
        warm = 2 * len(forms) * batch
        for form, bs in bodies.items():
            for n in clients:
                spy = None
                if args.py_spy and n == min(clients):
                    spies[form] = Path(f"/tmp/mlmon-bench-py-spy-{form}.txt")
                    spy = py_spy(args.py_spy, proc.pid, seconds, spies[form])
                r = http_run(port, proc.pid, bs, batch, n, seconds, len(runs), CONTENT_TYPES[form])
                if spy is not None:
                    spy.wait(timeout=60)
                r["form"] = form
                runs.append(r)
                print(f"HTTP {form:8s} clients={n}: {r['rate']:>10,.0f} records/s  ({r['requests']} requests, "
                      f"{r['failures']} failed, {r['mb_per_s']:.0f} MB/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, server CPU {r['server_cpu_us_per_record']:.2f} µs/record, "
                      f"of which the serving process {r['serving_process_cpu_us_per_record']:.2f}, "
                      f"in its kernel {r['serving_process_sys_us_per_record']:.2f})")
        conn.close()  # idle through the runs: the sidecar closed it after server.idle_timeout
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, models = request(conn, "GET", "/v1/models")
        counted = sum(v["predictions"] for v in models["models"][0]["versions"].values())
        sent = warm + sum(r["records"] for r in runs)
        print(f"check: the sidecar counted {counted:,} records, clients had {sent:,} accepted "
              f"({'OK' if counted == sent else 'MISMATCH'})")
        conn.close()
    finally:
        report = stop_server(proc)
    if report:
        gc_s = sum(report["gc_seconds"])
        by_gen = zip(report["gc_seconds"], report["gc_collections"], strict=True)
        print(f"sidecar process: {report['cpu_seconds']:.1f} s CPU in all, of which cyclic GC {gc_s:.2f} s "
              f"({100 * gc_s / max(report['cpu_seconds'], 1e-9):.1f} %; seconds/collections by generation "
              f"{', '.join(f'{t:.2f} s/{n}' for t, n in by_gen)})")

    print()
    print("| form | clients | records/s over HTTP | target | met | parse floor (records/s): orjson.loads, "
          "for arrow pyarrow's read_all | HTTP / floor | in-process parse+ingest (records/s) | HTTP / in-process | "
          "p50 / p99 ms per batch | server CPU µs/record | CPU target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        ref = refs[r["form"]]
        target = TARGETS[r["form"]]
        print(f"| {r['form']} | {r['clients']} | {r['rate']:,.0f} | ≥ {target:,} | {c.verdict(r['rate'] >= target)} | "
              f"{ref['floor']:,.0f} | {r['rate'] / ref['floor']:.3f} | {ref['in_process']:,.0f} | "
              f"{r['rate'] / ref['in_process']:.2f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
              f"{r['server_cpu_us_per_record']:.2f} | " + (
                  f"≤ {cpu:g} µs | {c.verdict(r['server_cpu_us_per_record'] <= cpu)} |"
                  if (cpu := CPU_TARGETS.get(r["form"])) else "— | — |"))

    print("\nserver-side stages in process, ms per batch (best of 5, so a lower bound; fresh ids), against the "
          "server's CPU per request:")
    print("| form | load (fastjson, else orjson) | parse_predictions | prepare | apply | freeing the request's "
          "objects | sum | server CPU per request over HTTP | difference: HTTP layer, GC, label store at capacity, "
          "cache effects |")
    print("|---|---|---|---|---|---|---|---|---|")
    one = {r["form"]: r for r in runs if r["clients"] == min(clients)}
    for form in bodies:
        st = stage_breakdown(monitor, bodies[form][0], 5 if args.quick else 20, form == "arrow")
        total = sum(st.values())
        per_req = one[form]["server_cpu_us_per_record"] * batch / 1e3 if form in one else float("nan")
        print(f"| {form} | {st['load']:.2f} | {st['parse_predictions']:.2f} | {st['prepare']:.2f} | "
              f"{st['apply']:.2f} | {st['free']:.2f} | {total:.2f} | {per_req:.2f} | {per_req - total:.2f} |")

    for form, path in spies.items():
        if path.exists():
            print(f"\npy-spy of the sidecar process during the {form} run with {min(clients)} client(s):")
            print(summarise_spy(path))

    if not args.no_profile:
        runs_prof = 10 if args.quick else 50
        for form in bodies:
            print(f"\ncProfile: prepare_body(body) + monitor.apply, {form} form, "
                  f"{runs_prof} × {batch} records (top 12 by own time)")
            print(profile(ingester(form), bodies[form][0], runs_prof, 12))

    if args.json:
        args.json.write_text(json.dumps({"machine": m, "references": refs, "runs": [
            {k: v for k, v in r.items()} for r in runs]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
