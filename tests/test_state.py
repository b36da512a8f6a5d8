"""State that survives restarts: checkpoint, stop, start a new Service on the same state dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import Clock, classifier, make_config, sample, traffic, training_frame

from exporter.baseline import build_baseline
from exporter.config import Config, StateConfig
from exporter.profile import Baseline
from exporter.service import Service
from exporter.state import FILE_NAME


def _service(tmp: Path, clock: Clock, baseline: Baseline | None = None) -> Service:
    mon = classifier(clock)
    config = Config(server=make_config().server, state=StateConfig(dir=tmp), models=(mon.config,))
    return Service(config, {"m": baseline or mon.baseline}, clock=clock)


def _observed(service: Service) -> tuple[dict[str, float], int, int, dict[str, float]]:
    mon = service.monitors["m"]
    ev = mon.evaluate()
    snap = mon.snapshot()
    assert snap.outcomes is not None and ev.quality is not None
    return ({d.feature: d.scores["psi"] for d in ev.features}, snap.window_samples, snap.outcomes.pending,
            ev.quality.per_version["v1"])


def _checkpointed(tmp: Path, clock: Clock) -> Service:
    """A service with 500 records in its window, checkpointed."""
    service = _service(tmp, clock)
    service.monitors["m"].ingest(traffic(500, np.random.default_rng(0))[0])
    assert service.checkpoint()
    assert service.monitors["m"].snapshot().window_samples == 500
    return service


def test_restart_keeps_windows_drift_pending_labels_and_joins_later_labels(tmp_path: Path) -> None:
    clock = Clock()
    rng = np.random.default_rng(3)
    batch, _, y = traffic(2_000, rng, flip_region=True)
    first = _service(tmp_path, clock)
    first.monitors["m"].ingest(batch)
    first.monitors["m"].ingest_labels(batch.ids[:1_000], y[:1_000].tolist())
    before = _observed(first)
    first.stop()  # writes the checkpoint
    assert (tmp_path / FILE_NAME).exists()

    clock.t += 5  # same bucket
    second = _service(tmp_path, clock)
    after = _observed(second)
    assert after[0] == pytest.approx(before[0], rel=1e-12)
    assert after[1:3] == before[1:3] == (2_000, 1_000)
    assert after[3] == pytest.approx(before[3], rel=1e-12)
    assert second.monitors["m"].snapshot().versions["v1"].first_seen == pytest.approx(clock.t - 5)

    joined = second.monitors["m"].ingest_labels(batch.ids[1_000:], y[1_000:].tolist())
    assert joined.matched == 1_000
    late = _observed(second)
    assert late[2] == 0
    assert second.monitors["m"].outcomes.evaluate(clock.t).labelled["v1"] == 2_000
    # Cumulative counters restart from zero: nothing ingested since the restart.
    assert second.monitors["m"].snapshot().versions["v1"].predictions == 0


def test_window_continues_from_wall_clock_after_restart(tmp_path: Path) -> None:
    clock = Clock()
    _checkpointed(tmp_path, clock)
    clock.t += 2 * 3600  # the process was down longer than the window
    restarted = _service(tmp_path, clock)
    assert restarted.monitors["m"].snapshot().window_samples == 0


def test_corrupt_checkpoint_is_moved_aside_and_the_service_starts_clean(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    _checkpointed(tmp_path, clock)
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    restarted = _service(tmp_path, clock)
    assert restarted.monitors["m"].snapshot().window_samples == 0
    assert not path.exists()
    assert len(list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    assert any("unreadable" in r.message and "moved to" in r.message for r in caplog.records)


def test_incompatible_checkpoint_after_a_baseline_change_is_moved_aside(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    service = _checkpointed(tmp_path, clock)
    old = service.monitors["m"].baseline
    changed = replace(old, features={k: v for k, v in old.features.items() if k != "g"})
    restarted = _service(tmp_path, clock, baseline=changed)
    assert restarted.monitors["m"].snapshot().window_samples == 0
    assert len(list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    assert any("incompatible" in r.message for r in caplog.records)


def test_checkpoint_metrics_are_exported(tmp_path: Path) -> None:
    clock = Clock()
    service = _service(tmp_path, clock)
    assert service.checkpoint()
    clock.t += 7
    from prometheus_client import generate_latest
    text = generate_latest(service.registry).decode()
    assert sample(text, "mlmon_checkpoint_age_seconds") == pytest.approx(7)
    assert sample(text, "mlmon_checkpoint_failures_total") == 0
    assert (sample(text, "mlmon_checkpoint_duration_seconds") or 0) > 0
    (tmp_path / FILE_NAME).unlink()
    tmp_path.chmod(0o500)
    try:
        if os.geteuid() != 0:
            assert not service.checkpoint()
            assert sample(generate_latest(service.registry).decode(), "mlmon_checkpoint_failures_total") == 1
    finally:
        tmp_path.chmod(0o700)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("sig", "interval", "wait"), [(signal.SIGKILL, "1s", 2.5), (signal.SIGTERM, "1h", 0.0)],
                         ids=["sigkill-loses-at-most-one-interval", "sigterm-checkpoints-on-the-way-out"])
def test_a_real_sidecar_keeps_its_state_across_a_kill(tmp_path: Path, sig: int, interval: str, wait: float) -> None:
    """``mlmon serve`` as a process: after SIGKILL at most the last checkpoint interval is lost; after
    SIGTERM (checkpoints an hour apart, so only the one written on the way out exists) nothing is. A
    label sent after the restart joins its pre-restart prediction."""
    base = build_baseline(training_frame(), "shop", prediction="prediction", target="target")
    base.save(tmp_path / "shop.json")
    port = _free_port()
    (tmp_path / "mlmon.yaml").write_text(json.dumps({
        "server": {"listen": f"127.0.0.1:{port}"},
        "state": {"dir": "state", "checkpoint_interval": interval},
        "models": [{"name": "shop", "baseline": "shop.json"}]}))
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "-c", str(tmp_path / "mlmon.yaml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    return proc
            except requests.ConnectionError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError("mlmon serve did not come up")

    frame = training_frame(300, seed=5)
    records = [{"id": f"k{i}", "features": {"age": float(r.age), "income": float(r.income), "visits": int(r.visits),
                                            "plan": r.plan, "country": r.country}, "prediction": r.prediction}
               for i, r in enumerate(frame.itertuples())]
    proc = start()
    try:
        assert requests.post(url + "/v1/predictions", json={"model": "shop", "records": records},
                             timeout=10).status_code == 200
        time.sleep(wait)  # SIGKILL: at least two checkpoint intervals
    finally:
        proc.send_signal(sig)
        assert proc.wait(30) in ((0,) if sig == signal.SIGTERM else (-signal.SIGKILL,))
    proc = start()
    try:
        text = requests.get(url + "/metrics", timeout=10).text
        assert sample(text, "mlmon_labels_pending", model="shop") == 300
        assert sample(text, "mlmon_window_samples", model="shop") == 300
        assert (sample(text, "mlmon_checkpoint_age_seconds") or 0) < 5
        joined = requests.post(url + "/v1/labels", json={"model": "shop", "labels": [{"id": "k0", "label": "yes"}]},
                               timeout=10).json()
        assert joined["matched"] == 1, joined
    finally:
        proc.terminate()
        proc.wait(10)


def test_state_config_is_read_and_checked(tmp_path: Path) -> None:
    from exporter.config import ConfigError, config_from_dict
    models = [{"name": "shop", "baseline": "shop.json"}]
    config = config_from_dict({"state": {"dir": "st", "checkpoint_interval": "2m"}, "models": models},
                              base_dir=tmp_path)
    assert config.state == StateConfig(dir=tmp_path / "st", checkpoint_interval_seconds=120.0)
    assert config_from_dict({"models": models}, base_dir=tmp_path).state.dir is None
    with pytest.raises(ConfigError, match=r"state\.checkpoint_interval"):
        config_from_dict({"state": {"dir": "st", "checkpoint_interval": "soon"}, "models": models}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"state.*unknown key"):
        config_from_dict({"state": {"path": "st"}, "models": models}, base_dir=tmp_path)


def test_a_logged_request_waiting_at_a_restart_joins_its_response_after_it(tmp_path: Path) -> None:
    """The event joiner's pending halves are checkpointed too: a KServe request logged before a
    redeploy pairs with its response logged after it, as one record."""
    from exporter.formats import decode_event

    clock = Clock()
    common = {"ce-specversion": "1.0", "ce-id": "req-7", "ce-source": "test", "ce-inferenceservicename": "m",
              "ce-component": "predictor", "content-type": "application/json"}
    first = _service(tmp_path, clock)
    first.handle_event(decode_event({**common, "ce-type": "org.kubeflow.serving.inference.request"},
                                    json.dumps({"instances": [{"x": 0.3, "g": "a"}]}).encode()))
    assert first.joiner.pending == 1
    first.stop()
    second = _service(tmp_path, clock)
    assert second.joiner.pending == 1
    second.handle_event(decode_event({**common, "ce-type": "org.kubeflow.serving.inference.response"},
                                     json.dumps({"predictions": ["yes"]}).encode()))
    second.flush_events()
    assert second.joiner.pending == 0
    assert second.joiner.stats()["m"]["paired"] == 1
    assert second.monitors["m"].snapshot().window_samples == 1


def test_a_checkpoint_from_a_process_that_hashes_ids_differently_is_set_aside(tmp_path: Path, monkeypatch,
                                                                                caplog) -> None:
    """Pending predictions are keyed by hash(id); a process salted differently could never join them."""
    from exporter import state

    _checkpointed(tmp_path, Clock()).stop()
    monkeypatch.setattr(state, "_HASH_PROBE", "another probe string, another hash")
    with caplog.at_level("ERROR"):
        fresh = _service(tmp_path, Clock())
    assert fresh.monitors["m"].snapshot().window_samples == 0
    assert "hashes ids differently" in caplog.text
    assert list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))
