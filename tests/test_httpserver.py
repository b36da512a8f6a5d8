"""exporter/httpserver.py on real sockets: HTTP/1.1 behaviour and its limits.

The app here is a small WSGI echo, so each test sees exactly what the server hands an app and
what it makes of the app's answer; the mlmon routes on this server are tested in test_server.py,
test_listeners.py and test_hardening.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from exporter.httpserver import HttpServer

LIMIT = 10_000


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("app failure")
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or 0.2))
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    out = json.dumps({"environ": seen, "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Echo", "1")])
    return [out]


@contextmanager
def running(**kw: Any) -> Iterator[HttpServer]:
    settings = {"max_body_bytes": LIMIT, "too_large": lambda: b'{"error": "too large"}', **kw}
    server = HttpServer(echo, host="127.0.0.1", port=0, **settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def raw(server: HttpServer, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_the_app_sees_a_pep3333_environ():
    with running() as server:
        r = requests.post(f"http://127.0.0.1:{server.effective_port}/a%20b/c?x=1&y=%20",
                          data=b"hello", headers={"Content-Type": "text/plain", "X-Multi": "one"}, timeout=5)
    env = r.json()["environ"]
    assert r.status_code == 200 and r.headers["X-Echo"] == "1"
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == ("POST", "/a b/c", "x=1&y=%20")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"], env["HTTP_X_MULTI"]) == ("text/plain", "5", "one")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REMOTE_ADDR"] == "127.0.0.1"
    assert r.json()["body"] == "hello"


def test_keep_alive_pipelining_and_chunked_bodies():
    requests_ = (b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                 b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with running() as server:
        out = raw(server, requests_)
    answers = out.split(b"HTTP/1.1 200 OK")[1:]
    assert len(answers) == 3
    bodies = [json.loads(a.split(b"\r\n\r\n", 1)[1]) for a in answers]
    assert [b["environ"]["PATH_INFO"] for b in bodies] == ["/one", "/two", "/three"]
    assert bodies[1]["body"] == "abcde" and bodies[1]["environ"]["CONTENT_LENGTH"] == "5"
    assert b"Connection: close" in answers[2]


def test_head_has_no_body_and_http10_closes():
    with running() as server:
        head = raw(server, b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        old = raw(server, b"GET /x HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200") and b"Connection: close" in old


def test_expect_100_continue_is_answered_before_the_body():
    with running() as server, socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"body")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and b'"body": "body"' in answer


def test_bodies_over_the_cap_are_413_at_once_declared_or_chunked():
    with running() as server:
        declared = raw(server, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\nab")
        chunk = b"%x\r\n%s\r\n" % (LIMIT + 1, b"a" * (LIMIT + 1))
        chunked = raw(server, b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        fits = requests.post(f"http://127.0.0.1:{server.effective_port}/x", data=b"a" * LIMIT, timeout=5)
    for answer in (declared, chunked):
        assert answer.startswith(b"HTTP/1.1 413") and answer.endswith(b'{"error": "too large"}')
    assert fits.status_code == 200 and len(fits.json()["body"]) == LIMIT


def test_malformed_requests_and_huge_headers_are_refused():
    with running() as server:
        garbage = raw(server, b"NOT HTTP AT ALL\r\n\r\n")
        huge = raw(server, b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
        ok = requests.get(f"http://127.0.0.1:{server.effective_port}/after", timeout=5)
    assert garbage.startswith(b"HTTP/1.1 400")
    assert huge.startswith(b"HTTP/1.1 431")
    assert ok.status_code == 200


def test_an_app_exception_is_500_and_the_server_goes_on():
    with running() as server:
        r = requests.get(f"http://127.0.0.1:{server.effective_port}/boom", timeout=5)
        after = requests.get(f"http://127.0.0.1:{server.effective_port}/x", timeout=5)
    assert r.status_code == 500 and "internal error" in r.json()["error"]
    assert after.status_code == 200


def test_header_names_with_underscores_are_dropped():
    with running() as server:
        out = raw(server, b"GET /x HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n")
    env = json.loads(out.split(b"\r\n\r\n", 1)[1])["environ"]
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_idle_connections_are_closed_and_slow_requests_cut_off():
    with running(idle_timeout=1.0, request_timeout=1.5) as server:
        started = time.monotonic()
        idle = raw(server, b"", wait=5)
        idle_after = time.monotonic() - started
        started = time.monotonic()
        slow = raw(server, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part", wait=5)
        slow_after = time.monotonic() - started
    assert idle == b"" and 0.9 < idle_after < 3
    assert slow.startswith(b"HTTP/1.1 408") and 1.4 < slow_after < 3.5


def test_connections_past_the_limit_wait_in_the_backlog():
    with running(connection_limit=2) as server:
        url = ("127.0.0.1", server.effective_port)
        held = [socket.create_connection(url, timeout=5) for _ in range(2)]
        for s in held:  # both are served (and kept alive)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        waiting = socket.create_connection(url, timeout=5)  # the kernel completes the handshake
        waiting.sendall(b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        waiting.settimeout(0.7)
        with pytest.raises(TimeoutError):
            waiting.recv(100)
        held[0].close()
        waiting.settimeout(5)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200")
        for s in (*held[1:], waiting):
            s.close()


def test_in_flight_counts_a_running_request_and_stop_accepting_keeps_it():
    with running() as server:
        result: dict[str, int] = {}
        url = f"http://127.0.0.1:{server.effective_port}"

        def slow() -> None:
            result["status"] = requests.get(url + "/slow?0.6", timeout=5).status_code

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        assert server.in_flight() == 1
        server.stop_accepting()
        t.join(timeout=5)
        assert result["status"] == 200 and server.in_flight() == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/x", timeout=2)


def test_a_server_closed_before_it_ran_releases_its_port():
    server = HttpServer(echo, host="127.0.0.1", port=0, max_body_bytes=10, too_large=lambda: b"")
    port = server.effective_port
    server.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_blank_lines_between_requests_start_no_deadline():
    """llhttp skips the CRLFs some clients send after a request: no request is under way, so no 408."""
    with running(idle_timeout=5.0, request_timeout=1.0) as server, \
            socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.settimeout(2.0)
        with pytest.raises(TimeoutError):
            s.recv(100)
        s.settimeout(5)
        s.sendall(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
