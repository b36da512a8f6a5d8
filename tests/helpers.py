"""Helpers shared by the test modules: tools, a manual clock, payloads, exposition samples.

Test modules import from here (and fixtures come from ``conftest.py``); no test module imports
another, so each can be read, moved or deleted alone.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.baseline import build_baseline
from exporter.batch import Batch
from exporter.config import Config, ModelConfig, ServerConfig, SLOConfig, WindowConfig
from exporter.monitor import ModelMonitor
from exporter.server import build_server, create_app, run_server, stop_server
from exporter.service import Service

OWN_PAYLOADS = Path(__file__).resolve().parent / "payloads"
"""Payloads written for these tests from the protocols' documentation: the tests run in full from a clone."""
SHARED_FIXTURES = Path(os.environ.get("MLMON_FIXTURES")
                       or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "payloads")
"""Captures from real servers beside the project (or $MLMON_FIXTURES): an extra check where present."""
PAYLOAD_ROOTS = [pytest.param(OWN_PAYLOADS, id="own")] + (
    [pytest.param(SHARED_FIXTURES, id="shared")] if SHARED_FIXTURES.is_dir() else [])
_ROOT = [OWN_PAYLOADS]


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require_tool(name: str) -> str:
    """Path of a binary; skip without it on a user's machine, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
        if ci():
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    return path


class Clock:
    """A clock the test moves by hand (``clock.t += 60``)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rows(n: int, rng: np.random.Generator | None = None) -> list[dict[str, Any]]:
    """``n`` row-form records of the ``shop`` model (see ``training_frame``)."""
    rng = rng or np.random.default_rng(1)
    return [{"id": f"r{i}", "features": {"age": float(rng.normal(40, 10)), "income": float(rng.lognormal(10, 0.5)),
                                          "visits": int(rng.poisson(3)), "plan": "basic", "country": "de"},
             "prediction": "yes", "latency_seconds": 0.02} for i in range(n)]


def read_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a text exposition as ``(name, labels, value)``, read by prometheus_client's parser."""
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def sample(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample named ``name`` whose labels include ``labels``, or None if absent."""
    for found, values, value in read_samples(text):
        if found == name and all(values.get(k) == v for k, v in labels.items()):
            return value
    return None


def metric(server: Any, name: str, **labels: str) -> float | None:
    """Value of one sample in a live server's exposition, or None if absent."""
    return sample(server.get("/metrics").text, name, **labels)


def use_payload_root(root: Path) -> None:
    """Make ``fixture()`` read from ``root`` (a module's autouse fixture over ``PAYLOAD_ROOTS`` sets it)."""
    _ROOT[0] = root


def payload_dir() -> Path:
    return _ROOT[0]


def fixture(rel: str) -> Path:
    """A payload under the current payload directory; missing is an error (ours are always there)."""
    path = _ROOT[0] / rel
    if not path.is_file():
        raise FileNotFoundError(f"payload {rel} missing under {_ROOT[0]}")
    return path


def iso_seconds(value: str) -> float:
    """Reference reading of an RFC 3339 UTC time (datetime, microsecond precision)."""
    whole, _, frac = value.rstrip("Z").partition(".")
    base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


def curl_events(rel: str) -> list[tuple[dict[str, str], bytes]]:
    """``curl -d BODY -H 'K: V'`` lines → ``[(headers, body)]``."""
    out = []
    for line in fixture(rel).read_text().splitlines():
        if not line.startswith("curl "):
            continue
        args = iter(shlex.split(line)[1:])
        headers: dict[str, str] = {}
        body = b""
        for arg in args:
            if arg == "-d":
                body = next(args).encode()
            elif arg == "-H":
                key, _, value = next(args).partition(":")
                headers[key.strip()] = value.strip()
        out.append((headers, body))
    return out


# ---- the shop model and a live server -------------------------------------------------------

def training_frame(n: int = 10_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income": rng.lognormal(10, 0.5, n),
        "visits": rng.poisson(3, n),
        "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
        "country": rng.choice(["de", "fr", "it", "es"], n),
        "prediction": rng.choice(["yes", "no"], n, p=[0.3, 0.7]),
        "target": rng.choice(["yes", "no"], n, p=[0.3, 0.7]),
    })


def make_config(*models: ModelConfig, max_body_bytes: int = 1_000_000) -> Config:
    return Config(server=ServerConfig(listen="127.0.0.1:0", max_body_bytes=max_body_bytes),
                  models=models or (shop_model(),))


def shop_model(**kw: object) -> ModelConfig:
    base = ModelConfig(name="shop", window=WindowConfig(window_seconds=600, bucket_seconds=60, min_samples=50),
                       slos=(SLOConfig("latency", "latency", 0.99, threshold_seconds=0.1),
                             SLOConfig("availability", "availability", 0.999)))
    return replace(base, **kw)


@dataclass
class LiveServer:
    url: str
    service: Service

    def post(self, path: str, body: object = None, **kw: object) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=10, **kw)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)


def serve(service: Service, token: str | None = None) -> Iterator[LiveServer]:
    server = build_server(service, create_app(service, token))
    service.start()
    thread = threading.Thread(target=run_server, args=(server,), daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.effective_port}", service)
    finally:
        service.stop()
        stop_server(server)


# ---- moved from single test modules, now shared ---------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)\]\]")


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def grafana_builtins(scrape_interval_s: float, range_s: int = 300, max_data_points: int = 1000) -> dict[str, str]:
    """Grafana's built-in interval variables as Grafana computes them for a Prometheus data source
    whose "scrape interval" setting is ``scrape_interval_s``: ``$__interval`` is range / max data
    points, at least the scrape interval (the data source's minimum interval), and
    ``$__rate_interval = max($__interval + scrape interval, 4 × scrape interval)`` — so a rate always
    spans enough scrapes to hold two samples."""
    interval = max(scrape_interval_s, math.ceil(range_s / max_data_points))
    rate_interval = max(interval + scrape_interval_s, 4 * scrape_interval_s)
    return {"__rate_interval": f"{rate_interval:g}s", "__interval": f"{interval:g}s",
            "__interval_ms": f"{interval * 1000:g}", "__range": f"{range_s}s", "__range_s": str(range_s),
            "__range_ms": str(range_s * 1000)}


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]`` by a single value."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {text!r}")
        value = values[name]
        return re.escape(value) if m.group(2) == "regex" else value

    return _VARIABLE.sub(one, text)


def classifier(clock: Clock | None = None, **cfg: object) -> ModelMonitor:
    rng = np.random.default_rng(0)
    n = 4_000
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-2 * x))
    train = pd.DataFrame({"x": x, "g": rng.choice(["a", "b", "c"], n),
                          "pred": np.where(p > 0.5, "yes", "no"),
                          "y": np.where(rng.random(n) < p, "yes", "no"), "conf": np.maximum(p, 1 - p)})
    baseline = build_baseline(train, "m", prediction="pred", target="y", confidence="conf")
    window = WindowConfig(window_seconds=3600, bucket_seconds=60, min_samples=100)
    config = ModelConfig(name="m", window=window, positive_class="yes", **cfg)
    return ModelMonitor(config, baseline, clock or Clock())


def traffic(n: int, rng: np.random.Generator, flip_region: bool = False) -> tuple[Batch, np.ndarray, np.ndarray]:
    """Predictions of a calibrated model and their labels; optionally concept drift for x > 0.5."""
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-2 * x))
    truth_p = np.where(x > 0.5, 1 - p, p) if flip_region else p
    y = np.where(rng.random(n) < truth_p, "yes", "no")
    groups = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    batch = Batch(model="m", version="v1", size=n, features={"x": x, "g": groups.tolist()},
                  predictions=[{"yes": float(q), "no": float(1 - q)} for q in p],
                  ids=[f"id{i}" for i in range(n)], groups={"g": groups.tolist()})
    return batch, p, y
