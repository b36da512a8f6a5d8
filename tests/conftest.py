"""Shared fixtures: a baseline of generated training data and a live HTTP server (helpers in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import LiveServer, make_config, serve, training_frame

from exporter.baseline import build_baseline
from exporter.profile import Baseline
from exporter.service import Service


@pytest.fixture(scope="session")
def small_baseline() -> Baseline:
    return build_baseline(training_frame(), "shop", prediction="prediction", target="target")


@pytest.fixture
def live_server(small_baseline: Baseline) -> Iterator[LiveServer]:
    yield from serve(Service(make_config(), {"shop": small_baseline}))
