"""A real monitoring stack for tests: the exporter fed with demo traffic, Prometheus with the
shipped rules, Alertmanager with the shipped routing and a webhook sink.

Every process binds 127.0.0.1 on a free port, is started here and stopped by PID.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml
from helpers import require_tool
from prometheus_client.parser import text_string_to_metric_families

from exporter.client import MlmonClient
from exporter.demo import MODEL, DriftPlan, Traffic, demo_baseline, demo_config
from exporter.server import build_server, run_server, stop_server
from exporter.service import Service

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@dataclass
class Exporter:
    url: str
    service: Service
    traffic: Traffic
    client: MlmonClient

    @property
    def target(self) -> str:
        return self.url.removeprefix("http://")


@contextmanager
def demo_exporter(rate: float = 200.0, drift_after: float = 0.0, label_delay: float = 0.5,
                  latency_scale: float = 1.0, plan: DriftPlan | None = None) -> Iterator[Exporter]:
    """The demo model and traffic through the real HTTP API; drift from ``drift_after`` seconds.

    ``latency_scale`` multiplies reported latencies (e.g. 20 makes most requests break a 100 ms SLO).
    """
    service = Service(demo_config(0), {MODEL: demo_baseline()})
    server = build_server(service)
    service.start()
    threading.Thread(target=run_server, args=(server,), daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}"
    client = MlmonClient(url, MODEL, "v1", flush_interval=0.2)
    traffic = Traffic(client, rate, drift_after, plan=plan, label_delay=label_delay)
    traffic.latency_scale = latency_scale
    traffic.start()
    try:
        yield Exporter(url, service, traffic, client)
    finally:
        traffic.stop()
        client.close()
        service.stop()
        stop_server(server)


class _Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Prometheus:
    url: str
    process: _Process

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        r = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {body.get('error')}")
        return body["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]

    def rule_health(self) -> list[tuple[str, str, str]]:
        groups = requests.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [(r["name"], r.get("health", ""), r.get("lastError", "")) for g in groups for r in g["rules"]]


def rules_with_short_for(tmp: Path, factor: float = 0.0, floor: str = "5s") -> list[Path]:
    """Copies of the shipped rule files with every ``for:`` shortened (tests cannot wait 15 min)."""
    out = []
    for path in sorted((ROOT / "alerting" / "rules").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "for" in rule:
                    rule["for"] = floor
        target = tmp / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(target)
    return out


@contextmanager
def prometheus(tmp: Path, targets: list[str], rule_files: list[Path] | None = None,
               alertmanager: str | None = None, interval: str = "1s") -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "mlmon", "static_configs": [{"targets": targets}]}],
        "rule_files": [str(p) for p in rule_files or []],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = _Process([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                       tmp / "prometheus.log")
    prom = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        wait_until(lambda: requests.get(f"{prom.url}/-/ready", timeout=2).ok, 30, what="Prometheus ready")
        yield prom
    except BaseException:
        print(process.output())
        raise
    finally:
        process.stop()


@dataclass
class Webhook:
    url: str
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def alerts(self, receiver_path: str) -> list[dict[str, Any]]:
        return [a for path, body in self.received if path == receiver_path for a in body.get("alerts", [])]


@contextmanager
def webhook() -> Iterator[Webhook]:
    """An HTTP sink recording (path, JSON body) of every POST: stands in for pager/ticket systems."""
    sink = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            sink.received.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Alertmanager:
    url: str
    target: str
    process: _Process


@contextmanager
def alertmanager(tmp: Path, config: Path) -> Iterator[Alertmanager]:
    binary = require_tool("prometheus-alertmanager")
    port = free_port()
    process = _Process([binary, f"--config.file={config}", f"--storage.path={tmp / 'am'}",
                        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                       tmp / "alertmanager.log")
    am = Alertmanager(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", process)
    try:
        wait_until(lambda: requests.get(f"{am.url}/-/ready", timeout=2).ok, 30, what="Alertmanager ready")
        yield am
    except BaseException:
        print(process.output())
        raise
    finally:
        process.stop()


def parse_exposition(text: str) -> tuple[dict[str, str], set[str]]:
    """(family name as its ``# TYPE`` line writes it → type, names of the samples present)."""
    families: dict[str, str] = {}
    found: set[str] = set()
    for fam in text_string_to_metric_families(text):
        # The parser names a counter family without ``_total``; its TYPE line carries it.
        families[f"{fam.name}_total" if fam.type == "counter" else fam.name] = fam.type
        found.update(s.name for s in fam.samples)
    return families, found


def family_of(name: str, families: dict[str, str]) -> str | None:
    """The exposition family a series name belongs to: ``x_bucket`` → histogram ``x``, and so on."""
    for suffix, kinds in (("_bucket", {"histogram"}), ("_count", {"histogram", "summary"}),
                          ("_sum", {"histogram", "summary"})):
        base = name.removesuffix(suffix)
        if base != name and families.get(base) in kinds:
            return base
    if families.get(name) in {"counter", "gauge", "untyped", "info", "stateset"}:
        return name
    base = name.removesuffix("_total")  # prometheus_client's own counters: TYPE line without _total
    if base != name and families.get(base) == "counter":
        return base
    return None


# PromQL has no parser in Python: strip what is not a metric name, keep the identifiers left.
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = _STRINGS.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {n for n in _IDENT.findall(text) if n not in _KEYWORDS and not re.fullmatch(r"\d\w*", n)}
