"""Fleet-wide drift on a real Prometheus: three sidecars, each fed a different third of one stream.

The shipped recording rules compute the two-sample chi-square of the union of the replicas' coarse
bins; the test recomputes it with numpy (``exporter.drift.chi_square``, itself checked against
scipy) on the per-replica counts Prometheus holds at the same timestamp, and checks those counts
against what was sent. The fleet alert fires for a shift that only the union shows (each replica
has too few records to judge), and does not fire for a feature that every replica flags on its
own while their union is in the training proportions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from helpers import LiveServer
from stack import prometheus, rules_with_short_for, wait_until

from exporter import drift
from exporter.baseline import build_baseline
from exporter.config import Config, ModelConfig, ServerConfig, WindowConfig
from exporter.server import build_server, run_server, stop_server
from exporter.service import Service

pytestmark = pytest.mark.tools
WAIT = 90.0
N = 20_000
# c: exactly 0.5 / 0.3 / 0.2 in training.
TRAIN = pd.DataFrame({
    "x": np.random.default_rng(0).normal(size=N),
    "c": np.repeat(["a", "b", "k"], [N // 2, 3 * N // 10, N // 5]),
})


@contextmanager
def sidecar(baseline: object) -> Iterator[LiveServer]:
    model = ModelConfig(name="m", window=WindowConfig(window_seconds=3600, bucket_seconds=60,
                                                      evaluation_interval_seconds=1, min_samples=200))
    service = Service(Config(server=ServerConfig(listen="127.0.0.1:0"), models=(model,)), {"m": baseline})
    server = build_server(service)
    service.start()
    threading.Thread(target=run_server, args=(server,), daemon=True).start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.effective_port}", service)
    finally:
        service.stop()
        stop_server(server)


def _records(rng: np.random.Generator, x: np.ndarray | None, c: list[str]) -> list[dict[str, object]]:
    out = []
    for i, cat in enumerate(c):
        features: dict[str, object] = {"c": cat}
        if x is not None and i < x.size:
            features["x"] = float(x[i])
        out.append({"features": features})
    return out


def _vector(result: list[dict], bins: list[str]) -> np.ndarray:
    by_bin = {r["metric"]["bin"]: float(r["value"][1]) for r in result}
    return np.array([by_bin.get(b, 0.0) for b in bins])


def test_fleet_rules_equal_the_union_and_page_only_on_the_union(tmp_path: Path):
    baseline = build_baseline(TRAIN, "m", categorical=("c",))
    rng = np.random.default_rng(1)
    # x: +0.5 sigma on every replica, 150 records each: no replica can judge it (min_samples 200),
    # the union of 450 can. c: replica 0 sends 0.3/0.5/0.2, replicas 1 and 2 send 0.6/0.2/0.2; each
    # is over its own threshold, their union is exactly 0.5/0.3/0.2.
    shares_c = [(180, 300, 120), (360, 120, 120), (360, 120, 120)]
    with ExitStack() as stack:
        cars = [stack.enter_context(sidecar(baseline)) for _ in range(3)]
        targets = [c.url.removeprefix("http://") for c in cars]
        prom = stack.enter_context(prometheus(tmp_path, targets, rules_with_short_for(tmp_path)))
        # Prometheus must see the counters at zero first, so increase() covers every record.
        wait_until(lambda: len(prom.query('mlmon_feature_bin_total{feature="x"} == 0')) >= 3 * 12, WAIT,
                   what="zero-valued bin counters of three sidecars")
        sent_x, sent_c = [], []
        for car, (na, nb, nk) in zip(cars, shares_c, strict=True):
            x = rng.normal(0.5, 1.0, 150)
            c = list(rng.permutation(["a"] * na + ["b"] * nb + ["k"] * nk))
            r = requests.post(car.url + "/v1/predictions", json={"model": "m", "version": "v1",
                                                                   "records": _records(rng, x, c)}, timeout=10)
            assert r.status_code == 200, r.text
            sent_x.append(x)
            sent_c.extend(c)
            car.service.monitor("m").evaluate()

        # Replica flags: x is below min_samples everywhere; c is flagged by every replica on its own.
        for car in cars:
            ev = car.service.monitor("m").evaluate()
            by = {f.feature: f for f in ev.features}
            assert by["x"].detected is None and by["c"].detected is True

        def fired() -> set[str]:
            return {a["labels"]["feature"] for a in prom.alerts()
                    if a["labels"].get("alertname") == "MlmonFeatureDrift" and a["state"] == "firing"}

        wait_until(lambda: "x" in fired(), WAIT, what="fleet MlmonFeatureDrift for x")
        assert "c" not in fired()  # every replica flags c, the union is in training proportions

        # The recorded fleet statistic equals numpy's on the per-replica increases at the same instant.
        profile_x = baseline.features["x"]
        bins_x = profile_x.coarse_labels()
        base_x = profile_x.coarse_counts(profile_x.fine_counts).astype(np.float64)
        bins_c = baseline.features["c"].coarse_labels()
        base_c = baseline.features["c"].counts.astype(np.float64)
        for feature, bins, base, total in (("x", bins_x, base_x, 450), ("c", bins_c, base_c, 1_800)):
            def compare(feature=feature, bins=bins, base=base, total=total) -> bool:
                rec = prom.query(f'model_feature:mlmon_feature_drift_fleet_chi2:increase1h{{feature="{feature}"}}[5s]')
                t, value = rec[0]["values"][-1]
                per_replica = prom.query(f'increase(mlmon_feature_bin_total{{feature="{feature}"}}[1h])', at=t)
                union = sum(_vector([r for r in per_replica if r["metric"]["instance"] == inst], bins)
                            for inst in targets)
                expected, _ = drift.chi_square(base, union)
                # increase() extrapolates to the range end by under one scrape interval, which is a
                # visible share of a series only seconds old: wait until it is within 5 % of what was sent.
                settled = abs(union.sum() - total) <= 0.05 * total
                return settled and abs(float(value) - expected) <= 1e-6 * max(1.0, abs(expected))

            wait_until(compare, 30, interval=0.3, what=f"recorded fleet chi-square of {feature} equal to numpy's")

        # The union's counts as the sidecars counted them, against what was sent.
        union_c = sum(np.array([car.service.monitor("m").window_counts()[
            car.service.monitor("m").offsets[1]:car.service.monitor("m").offsets[2]] for car in cars]))
        assert union_c[:3].tolist() == [sent_c.count("a"), sent_c.count("b"), sent_c.count("k")] == [900, 540, 360]
