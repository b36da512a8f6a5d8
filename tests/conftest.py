"""Shared fixtures: generated training data, in-memory services and a live HTTP server."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
import requests

from exporter.baseline import build_baseline
from exporter.config import Config, ModelConfig, ServerConfig, SLOConfig, WindowConfig
from exporter.profile import Baseline
from exporter.server import build_server, create_app, run_server, stop_server
from exporter.service import Service


def require_tool(name: str) -> str:
    """Path of a binary; skip without it on a user's machine, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    return path


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


@pytest.fixture(scope="session")
def small_baseline() -> Baseline:
    return build_baseline(training_frame(), "shop", prediction="prediction", target="target")


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


@pytest.fixture
def live_server(small_baseline: Baseline) -> Iterator[LiveServer]:
    yield from serve(Service(make_config(), {"shop": small_baseline}))


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
