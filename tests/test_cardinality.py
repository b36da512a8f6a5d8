"""Issue 9: hostile cardinality stays within the documented caps (README "Limits").

100,000 category values, 1,000 versions, 10,000 unknown feature names and 1 MB strings in every
name field, all through the HTTP API of a live server: the series count and the size of /metrics
stay within the caps, and the process's RSS grows by less than 50 MB.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import orjson
import requests
from helpers import make_config, rows, serve, shop_model

from exporter.config import LimitsConfig
from exporter.service import Service

MB = "x" * (1 << 20)


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def post(url: str, path: str, body: object, headers: dict | None = None) -> int:
    return requests.post(url + path, data=orjson.dumps(body), timeout=60,
                         headers={"Content-Type": "application/json", **(headers or {})}).status_code


def test_hostile_cardinality_stays_within_caps(small_baseline):
    limits = LimitsConfig()
    model = shop_model(limits=limits)
    service = Service(make_config(model, max_body_bytes=8 << 20), {"shop": small_baseline})
    for server in serve(service):
        url = server.url
        assert post(url, "/v1/predictions", {"model": "shop", "version": "v0", "records": rows(5)}) == 200
        one_version = server.get("/metrics").text
        per_version = sum('version="v0"' in line for line in series(one_version))
        fixed = len(series(one_version)) - per_version
        gc.collect()
        before = rss_mb()

        # 100,000 distinct category values in a categorical feature (10 batches of 10,000)
        for b in range(10):
            values = [f"cat-{b}-{i}" for i in range(10_000)]
            assert post(url, "/v1/predictions", {"model": "shop", "features": {"plan": values}}) == 200
        # 1,000 versions
        for v in range(1_000):
            assert post(url, "/v1/predictions", {"model": "shop", "version": f"v{v}", "records": rows(1)}) == 200
        # 10,000 unknown feature names in one request
        unknown = {f"unknown_{i}": [1] for i in range(10_000)}
        assert post(url, "/v1/predictions", {"model": "shop", "features": unknown}) == 200
        # 1 MB strings in every name field
        assert post(url, "/v1/predictions", {"model": MB, "records": rows(1)}) in (400, 404)
        assert post(url, "/v1/predictions", {"model": "shop", "version": MB, "records": rows(1)}) == 400
        assert post(url, "/v1/predictions", {"model": "shop", "features": {MB: [1]}, "predictions": [MB],
                                             "groups": {MB: [MB]}}) == 200
        assert post(url, "/v1/predictions", {"model": "shop", "records": [
            {"id": MB, "features": {}}, {"features": {"plan": MB}, "prediction": MB, "groups": {"g": MB}}]}) == 200
        assert post(url, "/v1/labels", {"model": "shop", "labels": [{"id": MB, "label": MB}]}) == 200
        assert post(url, "/v1/labels", {"model": MB, "labels": []}) in (400, 404)
        event = {"specversion": "1.0", "id": MB, "source": MB, "type": "org.kubeflow.serving.inference.request",
                 "inferenceservicename": "shop", "modelversion": MB, "data": {"instances": [[1, 2]]}}
        assert post(url, "/v1/events", event, {"Content-Type": "application/cloudevents+json"}) < 500
        response = {**event, "type": "org.kubeflow.serving.inference.response", "data": {"predictions": [MB]}}
        assert post(url, "/v1/events", response, {"Content-Type": "application/cloudevents+json"}) < 500

        text = server.get("/metrics").text
        models = server.get("/v1/models")
        gc.collect()
        growth = rss_mb() - before
    assert models.status_code == 200 and len(models.content) < 200_000
    lines = series(text)
    assert MB[:1000] not in text
    assert max(map(len, lines)) < 1000
    # Model versions only: mlmon_build_info and prometheus_client's python_info carry versions of software.
    versions = {m for line in lines if 'model="' in line for m in re.findall(r'version="([^"]*)"', line)}
    assert len(versions) <= limits.max_versions + 1  # + __other__ in the quality series
    # the documented cap: fixed series + max_versions × the series of one version (+ classes)
    cap = fixed + limits.max_versions * (per_version + 2) + 100
    assert len(lines) <= cap, (len(lines), cap)
    assert len(text) < 400_000, len(text)
    print(f"cardinality: {len(lines)} series (cap {cap}), /metrics {len(text)} bytes, RSS growth {growth:.1f} MB")
    assert growth < 50, f"RSS grew by {growth:.1f} MB"
    status = models.json()["models"][0]
    assert len(status["versions"]) <= limits.max_versions
    assert len(status["unknown_features"]) == limits.max_unknown_feature_names
