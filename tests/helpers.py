"""Helpers shared by the test modules: tools, a manual clock, payloads, exposition samples.

Test modules import from here (and fixtures come from ``conftest.py``); no test module imports
another, so each can be read, moved or deleted alone.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, ModelConfig, ServerConfig, SLOConfig, WindowConfig
from exporter.server import build_server, create_app, run_server, stop_server
from exporter.service import Service

FIXTURES = Path(os.environ.get("MLMON_FIXTURES")
                or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "payloads")


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


def fixture(rel: str) -> Path:
    """A captured payload under ``FIXTURES``; the test is skipped where the captures are not available."""
    path = FIXTURES / rel
    if not path.is_file():
        pytest.skip(f"fixture {rel} not found under {FIXTURES} (set MLMON_FIXTURES)")
    return path


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
