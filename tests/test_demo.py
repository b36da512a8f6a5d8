"""`mlmon demo` as a user runs it: a subprocess that serves drift gauges for every feature."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import requests
from helpers import read_samples

from exporter.demo import MODEL, demo_baseline


def test_demo_serves_drift_gauges_for_every_feature_and_detects_injected_drift():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "demo", "--port", "0", "--rate", "300", "--drift-after", "20",
         "--duration", "90"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if match := re.search(r"curl (http://127\.0\.0\.1:\d+)/metrics", line):
                url = match.group(1)
        assert url, "the demo did not print its metrics URL"
        started = time.monotonic()
        features = set(demo_baseline().features) | {"__prediction__"}
        seen: set[str] = set()
        while time.monotonic() - started < 60 and seen != features:
            text = requests.get(url + "/metrics", timeout=5).text
            seen = {labels["feature"] for name, labels, _ in read_samples(text)
                    if name == "mlmon_feature_drift_score" and labels["method"] == "psi"}
            time.sleep(1)
        assert seen == features, f"missing drift gauges after 60 s: {features - seen}"
        drifted: set[str] = set()
        while time.monotonic() - started < 80 and "monthly_charges" not in drifted:
            status = requests.get(url + "/v1/models", timeout=5).json()["models"][0]
            drifted = set(status["last_evaluation"]["drifted_features"])
            time.sleep(1)
        assert {"monthly_charges", "support_calls"} <= drifted
        assert not drifted & {"age", "region", "data_usage_gb"}
        assert status["model"] == MODEL
    finally:
        proc.terminate()
        proc.wait(timeout=15)
