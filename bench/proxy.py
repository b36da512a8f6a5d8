"""Latency ``mlmon proxy`` adds in front of a model server, at p50 and p99.

An upstream model server (Python ``http.server``, keep-alive, answers small KServe V1 and OIP V2
bodies at once) and the proxy (``build_proxy`` — what ``mlmon proxy`` runs — with a monitored
in-memory model) each run in their own process. This process sends the same small V1 and V2
requests over one keep-alive connection directly to the upstream (the reference, measured in the
same run, interleaved) and through the proxy. Added latency = proxied − direct, per percentile.
Target: p50 < 1 ms added.

    .venv/bin/python bench/proxy.py              # 3,000 requests per path and protocol
    .venv/bin/python bench/proxy.py --quick      # 500
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _common as c
import numpy as np

HERE = Path(__file__).resolve()
TARGET_P50_MS = 1.0


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "instances" in body:
            out = json.dumps({"predictions": ["yes"] * len(body["instances"])}).encode()
        else:
            n = body["inputs"][0]["shape"][0]
            out = json.dumps({"model_name": c.MODEL, "model_version": "v1", "outputs": [
                {"name": "label", "shape": [n], "datatype": "BYTES", "data": ["yes"] * n}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def role_upstream() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


def role_proxy(upstream: str) -> None:
    from exporter.proxy import build_proxy

    service = c.make_service(c.make_baseline(20_000))
    service.start()
    proxy = build_proxy(service, upstream, "127.0.0.1:0")
    print(json.dumps({"port": proxy.server_address[1]}), flush=True)
    proxy.serve_forever()


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.PIPE, text=True, cwd=str(c.ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start")
    return proc, int(json.loads(line)["port"])


def bodies() -> dict[str, tuple[str, bytes]]:
    row = c.make_frame(1, seed=3).to_dict("records")[0]
    v1 = json.dumps({"instances": [row]}).encode()
    v2 = json.dumps({"parameters": {"content_type": "pd"}, "inputs": [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in row.items()]}).encode()
    return {"v1": (f"/v1/models/{c.MODEL}:predict", v1), "v2": (f"/v2/models/{c.MODEL}/infer", v2)}


def measure(port_direct: int, port_proxy: int, path: str, body: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for p in (port_direct, port_proxy)}
    headers = {"Content-Type": "application/json"}
    times: dict[int, list[float]] = {port_direct: [], port_proxy: []}
    for i in range(n + 100):                         # 100 warm-up rounds, not recorded
        for port in ((port_direct, port_proxy) if i % 2 else (port_proxy, port_direct)):
            conn = conns[port]
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            elapsed = time.perf_counter() - t0
            assert resp.status == 200
            if i >= 100:
                times[port].append(elapsed)
    for conn in conns.values():
        conn.close()
    return np.array(times[port_direct]) * 1e3, np.array(times[port_proxy]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--role", choices=["upstream", "proxy"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        return role_upstream()
    if args.role == "proxy":
        return role_proxy(args.upstream)
    n = 500 if args.quick else args.requests
    c.print_machine()
    up, up_port = spawn("--role", "upstream")
    px, px_port = spawn("--role", "proxy", "--upstream", f"http://127.0.0.1:{up_port}")
    rows = []
    try:
        for protocol, (path, body) in bodies().items():
            direct, proxied = measure(up_port, px_port, path, body, n)
            rows.append((protocol, len(body), direct, proxied))
    finally:
        for proc in (px, up):
            proc.terminate()
            proc.wait(timeout=10)
    print()
    print("| protocol | body bytes | direct p50 / p99 ms | via proxy p50 / p99 ms | added p50 / p99 ms "
          "| target p50 | met |")
    print("|---|---|---|---|---|---|---|")
    for protocol, size, direct, proxied in rows:
        d50, d99 = np.percentile(direct, [50, 99])
        p50, p99 = np.percentile(proxied, [50, 99])
        added = p50 - d50
        print(f"| {protocol} | {size} | {d50:.3f} / {d99:.3f} | {p50:.3f} / {p99:.3f} | {added:.3f} / {p99 - d99:.3f} "
              f"| < {TARGET_P50_MS} ms | {'MET' if added < TARGET_P50_MS else 'NOT MET'} |")
    print(f"\n{n} requests per protocol and path, interleaved, one keep-alive connection each.")


if __name__ == "__main__":
    main()
