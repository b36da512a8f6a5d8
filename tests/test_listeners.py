"""Issue 9: listeners, TLS, auth for every route, slow clients, graceful SIGTERM (also as PID 1)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest
import requests
from helpers import make_config, rows

from exporter.config import ServerConfig
from exporter.server import Listener, build_listeners, drain, warn_if_open
from exporter.service import Service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from slowloris import attack  # noqa: E402

INGEST, READ, USER, PASSWORD = "ingest-s3cret", "read-s3cret", "prom", "scrape-pw"


@contextmanager
def running(service: Service) -> Iterator[dict[str, Listener]]:
    listeners = build_listeners(service)
    for listener in listeners:
        listener.start()
    service.start()
    try:
        yield {listener.name: listener for listener in listeners}
    finally:
        service.stop()
        for listener in listeners:
            listener.close()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def secured_service(tmp: Path, baseline, tls: bool, monkeypatch) -> tuple[Service, Path | None]:
    monkeypatch.setenv("T_INGEST", INGEST)
    monkeypatch.setenv("T_READ", READ)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    lines = ["basic_auth_users:", f"  {USER}: '{hashed}'"]
    cert = None
    if tls:
        cert, key = self_signed(tmp)
        lines += ["tls_server_config:", f"  cert_file: {cert}", f"  key_file: {key}"]
    web = tmp / "web.yml"
    web.write_text("\n".join(lines) + "\n")
    base = make_config()
    server = replace(base.server, metrics_listen="127.0.0.1:0", auth_token_env="T_INGEST", read_token_env="T_READ",
                     web_config_file=str(web))
    return Service(replace(base, server=server), {"shop": baseline}), cert


CREDENTIALS = {
    "none": {},
    "wrong bearer": {"Authorization": "Bearer nope"},
    "ingest token": {"Authorization": f"Bearer {INGEST}"},
    "read token": {"Authorization": f"Bearer {READ}"},
    "basic right": {"Authorization": requests.auth._basic_auth_str(USER, PASSWORD)},
    "basic wrong": {"Authorization": requests.auth._basic_auth_str(USER, "guess")},
}
ROUTES = [("POST", "/v1/predictions"), ("POST", "/v1/labels"), ("POST", "/v1/events"), ("POST", "/v1/client-stats"),
          ("GET", "/v1/models"),
          ("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/readyz")]
BODIES = {"/v1/predictions": {"model": "shop", "records": rows(2)},
          "/v1/labels": {"model": "shop", "labels": [{"id": "r0", "label": "yes"}]},
          "/v1/events": {"instances": [[1, 2]]},
          "/v1/client-stats": {"model": "shop", "client_id": "matrix", "dropped": 1}}


def expected(listener: str, method: str, path: str, cred: str) -> int:
    """The auth contract: POST needs the ingest token; GET needs read credentials except the probes;
    each route lives on one listener (main: ingest + /v1/models + /openapi.json; metrics: scrape)."""
    scrape = path in ("/metrics", "/healthz", "/readyz")
    here = scrape == (listener == "metrics")
    if method == "POST":
        if cred != "ingest token":
            return 401
        return {"/v1/predictions": 200, "/v1/labels": 200, "/v1/events": 202,
                "/v1/client-stats": 200}[path] if here else 404
    if path in ("/healthz", "/readyz"):
        return 200 if here else 404
    if cred not in ("read token", "basic right"):
        return 401
    return 200 if here else 404


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_auth_matrix_every_route_every_listener(tmp_path, small_baseline, monkeypatch, tls):
    service, cert = secured_service(tmp_path, small_baseline, tls, monkeypatch)
    with running(service) as listeners:
        got, want = {}, {}
        for name, listener in listeners.items():
            assert listener.url.startswith("https://" if tls else "http://")
            session = requests.Session()
            verify = str(cert) if cert else True  # per request: a session's verify loses to REQUESTS_CA_BUNDLE
            for method, path in ROUTES:
                for cred, headers in CREDENTIALS.items():
                    key = (name, method, path, cred)
                    if method == "POST":
                        ce = {"ce-id": "1", "ce-type": "org.kubeflow.serving.inference.request", "ce-source": "t",
                              "ce-specversion": "1.0", "ce-inferenceservicename": "nomodel"}
                        r = session.post(listener.url + path, json=BODIES[path], timeout=10, verify=verify,
                                         headers={**headers, **(ce if path == "/v1/events" else {})})
                    else:
                        r = session.get(listener.url + path, headers=headers, timeout=10, verify=verify)
                    got[key], want[key] = r.status_code, expected(name, method, path, cred)
                    if r.status_code == 401 and method == "GET":
                        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert got == want
        if tls:  # plain HTTP to a TLS listener gets no answer
            url = listeners["metrics"].url.replace("https://", "http://")
            with pytest.raises(requests.ConnectionError):
                requests.get(url + "/healthz", timeout=5)


def test_web_config_mistakes_are_named(tmp_path):
    from exporter.webconfig import WebConfigError, load_web_config

    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: missing.pem\n  cipher_suites: []\nbasic_auth_users:\n"
                    "  u: plaintext\nhttp_server_config: {}\n")
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    text = str(err.value)
    assert "tls_server_config.key_file: is required" in text
    assert "tls_server_config.cipher_suites: not supported" in text
    assert "basic_auth_users.u: must be a bcrypt hash" in text
    assert "http_server_config: not supported" in text


def test_tokenless_public_ingest_listener_warns(caplog):
    """Checked without binding: tests listen on 127.0.0.1 only."""
    with caplog.at_level("WARNING", logger="mlmon.http"):
        assert warn_if_open(ServerConfig(listen="0.0.0.0:8000"), None)
        assert not warn_if_open(ServerConfig(listen="0.0.0.0:8000"), "s3cret")
        assert not warn_if_open(ServerConfig(listen="127.0.0.1:8000"), None)
        assert not warn_if_open(ServerConfig(listen="[::1]:8000"), None)
    [record] = caplog.records
    assert "SECURITY" in record.message and "auth_token_env" in record.message and "0.0.0.0:8000" in record.message


def test_idle_and_slowloris_clients_do_not_starve_scrapes(small_baseline):
    base = make_config()
    server = replace(base.server, request_timeout_seconds=3.0, idle_timeout_seconds=30.0)
    service = Service(replace(base, server=server), {"shop": small_baseline})
    with running(service) as listeners:
        report = attack("127.0.0.1", listeners["main"].port, seconds=10, idle=100, slow=30, drip=0.5)
    for path in ("/metrics", "/healthz"):
        assert report.failures[path] == 0
        assert report.p(path, 99) < 1.0, (path, report.p(path, 99))
    assert report.slow_cut_off >= 30  # every slow sender was cut off at least once by the 3 s deadline


def test_declared_oversized_body_is_answered_at_once(live_server):
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 40000000\r\n\r\n{}")
        started = time.monotonic()
        answer = s.recv(1000)
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 2


def _slow_post(url: str, body: bytes, chunks: int, pause: float, result: dict) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        step = len(body) // chunks + 1
        for i in range(0, len(body), step):
            s.sendall(body[i:i + step])
            time.sleep(pause)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    result["status"] = int(data.split(b" ", 2)[1])
    result["body"] = data.split(b"\r\n\r\n", 1)[1]


def test_drain_finishes_in_flight_request_and_fails_readiness(small_baseline):
    import orjson

    service = Service(make_config(max_body_bytes=20_000_000), {"shop": small_baseline})
    body = orjson.dumps({"model": "shop", "records": rows(20_000)})
    with running(service) as listeners:
        url = listeners["main"].url
        keep_alive = requests.Session()
        assert keep_alive.get(url + "/readyz", timeout=5).status_code == 200
        result: dict = {}
        sender = threading.Thread(target=_slow_post, args=(url, body, 10, 0.2, result))
        sender.start()
        time.sleep(0.5)
        done: list[bool] = []
        drainer = threading.Thread(target=lambda: done.append(drain(list(listeners.values()), service, 10)))
        drainer.start()
        time.sleep(0.3)
        # the listener no longer accepts, but a kept-alive connection sees readiness fail
        assert keep_alive.get(url + "/readyz", timeout=5).status_code == 503
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/healthz", timeout=2)
        sender.join(timeout=20)
        drainer.join(timeout=20)
    assert result["status"] == 200 and orjson.loads(result["body"])["accepted"] == 20_000
    assert done == [True]


@pytest.mark.skipif(shutil.which("unshare") is None or (os.geteuid() != 0 and not Path(
    "/proc/sys/kernel/unprivileged_userns_clone").exists()), reason="needs unshare (root or user namespaces)")
def test_sigterm_as_pid1_drains_and_exits_0(tmp_path, small_baseline):
    import orjson

    small_baseline.save(tmp_path / "b.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "mlmon.yaml").write_text(
        f"server:\n  listen: 127.0.0.1:{port}\n  max_body_bytes: 20000000\n  drain_timeout: 15s\n"
        "models:\n  - name: shop\n    baseline: b.json\n")
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    proc = subprocess.Popen(["unshare", *userns, "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                             "exporter.cli", "serve", "-c", str(tmp_path / "mlmon.yaml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        [pid1] = children  # the sidecar: PID 1 inside the new namespace
        nspid = next(line for line in Path(f"/proc/{pid1}/status").read_text().splitlines()
                     if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid
        body = orjson.dumps({"model": "shop", "records": rows(20_000)})
        result: dict = {}
        sender = threading.Thread(target=_slow_post, args=(url, body, 10, 0.2, result))
        sender.start()
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(int(pid1), signal.SIGTERM)
        sender.join(timeout=30)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert code == 0, log
    assert elapsed < 15, elapsed
    assert result.get("status") == 200 and orjson.loads(result["body"])["accepted"] == 20_000, log
    assert "draining" in log and "drain complete" in log
