"""Large batches prepared in a worker process (exporter/offload.py) count exactly as inline ones.

Real sidecars on 127.0.0.1, real worker processes: the same batches sent to a sidecar with
``server.ingest_workers: 0`` and to one with a worker give the same exposition; a worker that
dies costs no batch; answers stay in request order behind a batch being prepared.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import replace

import numpy as np
import pytest
import requests
from helpers import make_config, read_samples, rows, serve, wait_for

from exporter.profile import Baseline
from exporter.service import Service

BIG = 400  # records per batch: about 80 KB, over the 64 KiB threshold


def _batches(n: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        records = rows(BIG, rng)
        for i, r in enumerate(records):
            r["id"] = f"b{k}-{i}"
        if k % 3 == 1:  # some refused records in some batches
            records[5]["latency_seconds"] = -1
            records[9]["features"] = "not an object"
        out.append(json.dumps({"model": "shop", "version": f"v{k % 2}", "records": records}).encode())
    assert all(len(b) > 64 * 1024 for b in out)
    return out


def _service(baseline: Baseline, workers: int) -> Service:
    cfg = make_config(max_body_bytes=5_000_000)
    return Service(replace(cfg, server=replace(cfg.server, ingest_workers=workers)), {"shop": baseline})


def _counters(url: str) -> list[tuple[str, str, float]]:
    text = requests.get(url + "/metrics", headers={"Accept": "text/plain"}, timeout=10).text
    return sorted((n, json.dumps(lb, sort_keys=True), v) for n, lb, v in read_samples(text)
                  if not n.endswith("_created") and "seconds" not in n and not n.startswith(("process_", "python_")))


def _ready(service: Service) -> None:
    """Start the worker with one batch (prepared inline meanwhile) and wait until it is up."""
    service.offload.submit(b"x" * (service.offload.min_bytes + 1), None)
    wait_for(lambda: service.offload._ready, timeout=60)


def test_offloaded_batches_count_exactly_as_inline_ones(small_baseline: Baseline):
    batches = _batches(6)
    results = {}
    for workers in (0, 1):
        service = _service(small_baseline, workers)
        for live in serve(service):
            if workers:
                _ready(service)
            replies = [requests.post(live.url + "/v1/predictions", data=b, timeout=30,
                                     headers={"Content-Type": "application/json"}).json() for b in batches]
            labels = requests.post(live.url + "/v1/labels", timeout=10, json={"model": "shop", "labels": [
                {"id": "b0-1", "label": "yes"}, {"id": "b5-2", "label": "no"}, {"id": "zz", "label": "yes"}]})
            results[workers] = (replies, labels.json(), _counters(live.url))
            if workers:
                assert service.offload.prepared == len(batches)
    assert results[0] == results[1]
    assert results[1][1]["matched"] == 2


def test_a_worker_that_dies_costs_no_batch(small_baseline: Baseline):
    service = _service(small_baseline, 1)
    batches = _batches(2)
    for live in serve(service):
        _ready(service)
        pool = service.offload._pool
        assert pool is not None
        for pid in list(pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        replies = [requests.post(live.url + "/v1/predictions", data=b, timeout=30,
                                 headers={"Content-Type": "application/json"}) for b in batches]
        assert [r.status_code for r in replies] == [200, 200]
        accepted = sum(r.json()["accepted"] for r in replies)
        assert accepted == 2 * BIG - 2  # the second batch has two refused records
        assert service.offload.failures >= 1
        counted = sum(v for n, lb, v in _counters(live.url) if n == "mlmon_predictions_total")
        assert counted == accepted


def test_answers_keep_their_order_behind_a_prepared_batch(small_baseline: Baseline):
    service = _service(small_baseline, 1)
    big = _batches(1)[0]
    for live in serve(service):
        _ready(service)
        host, port = live.url.removeprefix("http://").split(":")
        pipelined = (b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(big)}\r\n\r\n".encode() + big
                     + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(pipelined)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        first, second = data.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200") and b'"accepted":%d' % BIG in first
        assert second.startswith(b"200") and b'"status":"ok"' in second
        assert service.offload.prepared == 1


@pytest.mark.parametrize("workers", [-1, 65, "two"])
def test_ingest_workers_is_validated(workers):
    from exporter.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as err:
        config_from_dict({"server": {"ingest_workers": workers}, "models": []})
    assert any(p.startswith("server.ingest_workers") for p in err.value.problems)
