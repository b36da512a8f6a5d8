"""The cached /metrics text equals a fresh uncached render; OpenMetrics and gzip negotiation.

``MlmonCollector.text`` (settings once per monitor, evaluated samples once per evaluation, live
counters per scrape) is compared with prometheus_client's ``generate_latest`` of the same registry
(every family rebuilt from fresh snapshots) at the same moment: a manual clock holds time still.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import Clock, classifier, rows, serve, shop_model, traffic
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families
from stack import prometheus, wait_until

from exporter.config import Config, DriftConfig, FairnessConfig, ServerConfig
from exporter.exposition import Chunk, plain
from exporter.service import Service

SELF = ("process_", "python_", "mlmon_scrape_duration")
"""Self-monitoring families: values move with every scrape, so they are left out of comparisons."""
OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
"""What Prometheus 2.x sends by default: OpenMetrics preferred."""


def _samples(families: object) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples  # type: ignore[attr-defined]
                  if not s.name.startswith(SELF))


def _mlmon_lines(text: str) -> list[str]:
    """Every line (samples, HELP, TYPE) that belongs to mlmon's families, sorted."""
    def name(line: str) -> str:
        return line.split()[2] if line.startswith("#") else line.split("{")[0].split(" ")[0]
    return sorted(line for line in text.splitlines() if line and line != "# EOF" and not name(line).startswith(SELF))


def assert_cached_equals_uncached(service: Service) -> str:
    cached = plain(service.collector.text()).decode()
    fresh = generate_latest(service.registry).decode()
    assert _samples(text_string_to_metric_families(cached)) == _samples(text_string_to_metric_families(fresh))
    # Stronger than equal values: the same lines, byte for byte (family order aside).
    assert _mlmon_lines(cached) == _mlmon_lines(fresh)
    return cached


def _classifier_service(clock: Clock, **cfg: object) -> Service:
    mon = classifier(clock, fairness=FairnessConfig(attributes=("g",), min_samples=50), **cfg)
    config = Config(server=ServerConfig(listen="127.0.0.1:0"), models=(mon.config, replace(mon.config, name="m2")))
    return Service(config, {"m": mon.baseline, "m2": replace(mon.baseline, model="m2")}, clock=clock)


@pytest.mark.parametrize("export_bins", [True, False])
def test_cached_text_equals_uncached_render_through_a_model_life(export_bins):
    clock = Clock()
    service = _classifier_service(clock, drift=DriftConfig(export_bins=export_bins))
    rng = np.random.default_rng(3)
    mon = service.monitor("m")
    first = assert_cached_equals_uncached(service)  # nothing ingested, nothing evaluated
    assert "mlmon_feature_drift_score" not in first
    assert ("mlmon_baseline_bin_ratio{" in first) is export_bins

    batch, _, y = traffic(600, rng)
    mon.ingest(batch)
    assert_cached_equals_uncached(service)  # after ingest, before any evaluation
    mon.ingest_labels(batch.ids, y.tolist())
    clock.t += 30
    mon.evaluate()
    text = assert_cached_equals_uncached(service)  # after an evaluation, with labels and fairness
    assert "mlmon_feature_drift_score{" in text and "mlmon_fairness_gap{" in text
    assert ("mlmon_feature_bin_total{" in text) is export_bins

    batch2, _, _ = traffic(300, rng, flip_region=True)
    mon.ingest(replace(batch2, version="v2", ids=[f"b{i}" for i in range(300)]))  # a new version label
    service.monitor("m2").ingest(replace(batch2, model="m2"))
    text = assert_cached_equals_uncached(service)  # new version: counters move, evaluation unchanged
    assert 'mlmon_predictions_total{model="m",version="v2"} 300.0' in text
    clock.t += 60
    mon.evaluate()
    service.monitor("m2").evaluate()
    service.count_unattributed("unknown_model", 4)
    assert_cached_equals_uncached(service)  # both evaluated again, rejections outside any model


def test_settings_are_rendered_once_and_evaluated_text_once_per_evaluation():
    clock = Clock()
    service = _classifier_service(clock)
    mon = service.monitor("m")
    mon.ingest(traffic(400, np.random.default_rng(0))[0])
    mon.evaluate()

    def chunks() -> dict[bytes, Chunk]:
        # Keyed by their text; what changed between two scrapes is a new object.
        return {c.data: c for c in service.collector.text() if isinstance(c, Chunk)}

    before = chunks()
    mon.ingest(traffic(400, np.random.default_rng(1))[0])
    again = chunks()
    assert {id(c) for c in before.values()} == {id(c) for c in again.values()}  # ingest re-renders live text only
    clock.t += 60
    mon.evaluate()
    after = chunks()
    kept = {id(c) for c in before.values()} & {id(c) for c in after.values()}
    ratio = [c for c in before.values() if c.data.startswith(b"mlmon_baseline_bin_ratio{")]
    score = [c for c in before.values() if c.data.startswith(b"mlmon_feature_drift_score{")]
    assert ratio and all(id(c) in kept for c in ratio)  # settings survive an evaluation
    assert score and not any(id(c) in kept for c in score)  # evaluated text is replaced by it
    assert_cached_equals_uncached(service)


@pytest.fixture
def fed_server(small_baseline):
    service = Service(Config(server=ServerConfig(listen="127.0.0.1:0"), models=(shop_model(),)),
                      {"shop": small_baseline})
    for server in serve(service):
        server.post("/v1/predictions", {"model": "shop", "version": "v1", "records": rows(300)})
        service.monitor("shop").evaluate()
        yield server


def _get(server, **headers: str) -> requests.Response:
    # stream=True: the raw (possibly gzipped) bytes stay readable; requests would decode them.
    return requests.get(server.url + "/metrics", headers=headers, timeout=10, stream=True)


def test_gzip_only_when_accepted_and_one_valid_member(fed_server):
    plain_r = _get(fed_server, **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain_r.headers
    body = plain_r.raw.read()
    assert body.startswith(b"# HELP mlmon_build_info")
    zipped = _get(fed_server, **{"Accept-Encoding": "br;q=1.0, gzip;q=0.8"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    raw = zipped.raw.read(decode_content=False)
    assert raw[:2] == b"\x1f\x8b" and len(raw) < len(body) / 4
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member, checked CRC and length
    text = inflate.decompress(raw)
    assert inflate.eof and inflate.unused_data == b""
    assert gzip.decompress(raw) == text
    assert _samples(text_string_to_metric_families(text.decode())) == \
        _samples(text_string_to_metric_families(body.decode()))


def test_openmetrics_when_asked_for_and_text_otherwise(fed_server):
    text_r = _get(fed_server)
    assert text_r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = text_r.text
    om_r = _get(fed_server, Accept=PROMETHEUS_ACCEPT)
    assert om_r.headers["Content-Type"].startswith(OM)  # prometheus_client adds "; escaping=underscores"
    om = om_r.text
    assert om.endswith("\n# EOF\n") and om.count("# EOF") == 1
    # Counters: the family is typed without _total, its samples carry it; no _created samples.
    assert "# TYPE mlmon_predictions counter\n" in om and "# TYPE mlmon_predictions_total counter\n" in text
    assert 'mlmon_predictions_total{model="shop",version="v1"} 300.0' in om
    assert "_created" not in om
    om_parsed = {(n, labels): v for n, labels, v in _samples(om_families(om))}  # the strict OpenMetrics parser
    text_parsed = {(n, labels): v for n, labels, v in _samples(text_string_to_metric_families(text))}
    assert om_parsed.keys() == text_parsed.keys()
    assert all(om_parsed[k] == text_parsed[k] for k in om_parsed if not k[0].startswith("mlmon_window"))
    plain_explicit = _get(fed_server, Accept="text/plain;version=0.0.4")
    assert plain_explicit.headers["Content-Type"].startswith("text/plain") and "# EOF" not in plain_explicit.text


class _TextOnly(BaseHTTPRequestHandler):
    """Forwards a scrape with ``Accept: text/plain;version=0.0.4``: Prometheus 2.42 has no
    ``scrape_protocols`` setting, so this is how it is made to read the classic text format."""

    upstream = ""

    def do_GET(self) -> None:
        r = requests.get(self.upstream + self.path, timeout=10, stream=True,
                         headers={"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"})
        body = r.raw.read(decode_content=False)
        self.send_response(r.status_code)
        for key in ("Content-Type", "Content-Encoding"):
            if key in r.headers:
                self.send_header(key, r.headers[key])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.tools
def test_real_prometheus_scrapes_openmetrics_and_text_with_equal_samples(fed_server, tmp_path: Path):
    handler = type("Handler", (_TextOnly,), {"upstream": fed_server.url})
    forwarder = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=forwarder.serve_forever, daemon=True).start()
    direct = fed_server.url.removeprefix("http://")
    via_text = f"127.0.0.1:{forwarder.server_address[1]}"
    try:
        with prometheus(tmp_path, [direct, via_text]) as prom:
            def both_scraped() -> bool:
                up = {r["metric"]["instance"]: r["value"][1] for r in prom.query("up")}
                return up.get(direct) == "1" and up.get(via_text) == "1"
            wait_until(both_scraped, 60, what="both targets up")
            counts = {r["metric"]["instance"]: float(r["value"][1])
                      for r in prom.query('count by (instance) ({__name__=~"mlmon_.+", '
                                          '__name__!~"mlmon_scrape_duration_seconds.*"})')}
            expected = len([s for s in _samples(text_string_to_metric_families(fed_server.get("/metrics").text))
                            if s[0].startswith("mlmon_")])
            assert counts == {direct: expected, via_text: expected}
            for instance in (direct, via_text):
                [predictions] = prom.query(f'mlmon_predictions_total{{instance="{instance}"}}')
                assert float(predictions["value"][1]) == 300
                bins = prom.query(f'sum(mlmon_feature_bin_total{{instance="{instance}",feature="age"}})')
                assert float(bins[0]["value"][1]) == 300
    finally:
        forwarder.shutdown()
        forwarder.server_close()


def test_flat_bin_counts_are_the_sent_values_binned():
    """``Snapshot.bin_counts`` (one reduceat over every feature) against binning the sent values."""
    clock = Clock()
    service = _classifier_service(clock)
    mon = service.monitor("m")
    batch, _, _ = traffic(700, np.random.default_rng(5))
    mon.ingest(batch)
    snap = mon.snapshot()
    counts = dict(zip(snap.bin_rows, snap.bin_counts, strict=True))
    x = mon.baseline.features["x"]
    fine = np.bincount(np.searchsorted(x.edges, batch.features["x"], side="left"), minlength=x.n_bins)
    expected_x = np.add.reduceat(fine, x.coarse_starts).tolist()
    assert [counts[("x", label)] for label in x.coarse_labels()] == expected_x and sum(expected_x) == 700
    sent = {g: batch.features["g"].count(g) for g in ("a", "b", "c")}
    assert {g: counts[("g", g)] for g in sent} == sent
    for fc in snap.features:  # the per-feature view holds the same numbers
        assert fc.counts == tuple(counts[(fc.feature, label)] for label in fc.bins)
