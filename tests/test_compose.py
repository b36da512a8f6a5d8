"""Static and offline checks of the demo stack (docker-compose.yml, Dockerfile, examples/).

No Docker engine runs on the test machines: the compose file is validated with Debian's
``docker-compose config`` (skipped when the binary is missing, unless ``CI`` is set), and the
example programs are exercised in-process: the model server against a stand-in sidecar, the
baseline step with the exact command of the compose file, the sidecar with the example config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from helpers import read_samples, sample

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLES = ROOT / "examples"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _services() -> dict[str, Any]:
    return _compose()["services"]


def _binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount of a service (named volumes excluded)."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append((vol["source"], vol["target"]))
            continue
        source, target = vol.split(":")[:2]
        if source.startswith((".", "/", "~")):
            out.append((source, target))
    return out


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the compose file ----------------------------------------------------------------------------

def test_compose_config_is_valid():
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is required in CI (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed")
    result = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_sidecar_shares_the_model_network_namespace():
    services = _services()
    assert services["mlmon"]["network_mode"] == "service:model"
    assert "ports" not in services["mlmon"], "a service in another's network namespace cannot publish ports"
    published = [str(p) for p in services["model"].get("ports", [])]
    assert any(p.endswith(":8000") for p in published), "publish the sidecar's port on the model service"
    assert services["model"]["environment"]["MLMON_URL"] == "http://127.0.0.1:8000"


def test_every_mounted_host_path_exists():
    missing = []
    for name, service in _services().items():
        for source, _ in _binds(service):
            if not (ROOT / source).exists():
                missing.append(f"{name}: {source}")
    assert not missing, f"host paths mounted but not in the repository: {missing}"


def test_build_contexts_and_named_volumes_exist():
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / "Dockerfile").is_file(), f"{name}: no Dockerfile in {context}"
        for vol in service.get("volumes", []):
            if isinstance(vol, str) and not vol.startswith((".", "/", "~")):
                assert vol.split(":")[0] in declared, f"{name}: named volume {vol} not declared"


def test_stack_wiring():
    services = _services()
    for required in ("baseline", "model", "mlmon", "loadgen", "prometheus", "alertmanager",
                     "grafana", "webhook-logger"):
        assert required in services, f"missing service {required}"
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    prom_binds = dict(_binds(services["prometheus"]))
    assert "./alerting/rules" in prom_binds
    assert dict(_binds(services["alertmanager"])).get("./alerting/alertmanager.yml")

    # Prometheus loads the rules from where they are mounted and scrapes the sidecar as job mlmon.
    prom = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text(encoding="utf-8"))
    rules_dir = prom_binds["./alerting/rules"]
    assert any(f.startswith(rules_dir + "/") for f in prom["rule_files"])
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "mlmon"]
    assert job["static_configs"][0]["targets"] == ["model:8000"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]

    # Grafana: provisioning and dashboards where the provider looks for them; anonymous viewers.
    grafana = services["grafana"]
    g_binds = dict(_binds(grafana))
    assert g_binds["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/mlmon.yml").read_text(encoding="utf-8"))
    assert g_binds["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    datasource = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"

    # The sidecar reads the config and the baseline the one-shot service writes.
    mlmon = services["mlmon"]
    assert dict(_binds(mlmon))["./examples/mlmon.yaml"] == "/etc/mlmon/mlmon.yaml"
    assert mlmon["depends_on"]["baseline"]["condition"] == "service_completed_successfully"
    config = yaml.safe_load((EXAMPLES / "mlmon.yaml").read_text(encoding="utf-8"))
    assert config["server"]["listen"] == "0.0.0.0:8000"
    baseline_mount = next(v.split(":")[1] for v in mlmon["volumes"] if v.startswith("baseline:"))
    for model in config["models"]:
        assert model["baseline"].startswith(baseline_mount + "/")
        assert model["baseline"].split("/")[-1] in services["baseline"]["command"][0]


def _webhook_urls(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["url"]] if isinstance(node.get("url"), str) else []
        return found + [u for v in node.values() for u in _webhook_urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in _webhook_urls(v)]
    return []


def test_alertmanager_receivers_reach_the_webhook_logger():
    """Every receiver URL of alerting/alertmanager.yml lands on the webhook logger in the stack."""
    path = ROOT / "alerting/alertmanager.yml"
    if not path.exists():
        pytest.fail("alerting/alertmanager.yml is missing (mounted by docker-compose.yml)")
    receivers = yaml.safe_load(path.read_text(encoding="utf-8"))["receivers"]
    urls = _webhook_urls(receivers)
    assert urls, "no webhook receivers in alerting/alertmanager.yml"
    logger = _services()["webhook-logger"]
    port = int(logger["environment"]["PORT"])
    shares_alertmanager = logger.get("network_mode") == "service:alertmanager"
    for url in urls:
        match = re.match(r"https?://([^/:]+):(\d+)", url)
        assert match, f"receiver URL without host:port: {url}"
        host, url_port = match.group(1), int(match.group(2))
        local = host in ("127.0.0.1", "localhost") and shares_alertmanager
        assert (host == "webhook-logger" or local) and url_port == port, (
            f"alert receiver {url} does not reach the webhook logger (port {port}, "
            f"network_mode {logger.get('network_mode')})")


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    health = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*", text, re.M).group(0)
    assert "urllib" in health and "curl" not in health
    assert "/healthz" in text
    assert re.search(r"^EXPOSE 8000\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["mlmon"\]', text, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1))
    assert "0.0.0.0:8000" in cmd, "in a container mlmon must listen on all interfaces"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("!pyproject.toml", "!README.md", "!exporter/"):
        assert needed in ignored
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for src in copied.split():
            assert (ROOT / src).exists() or src == "README.md", f"Dockerfile copies missing {src}"


# -- the example programs ------------------------------------------------------------------------

class _Sink(BaseHTTPRequestHandler):
    """A stand-in sidecar that records what it is sent."""

    received: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def sink():
    _Sink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _Sink.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def model_server(monkeypatch):
    pytest.importorskip("flask")
    pytest.importorskip("numpy")
    monkeypatch.syspath_prepend(str(EXAMPLES / "model_server"))
    for mod in ("world", "model", "app"):
        sys.modules.pop(mod, None)
    import app

    return app


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def _closed_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    port = server.server_port
    server.server_close()
    return port


CUSTOMER = {"age": 41, "tenure_months": 12, "monthly_charges": 80.5, "contract": "month-to-month"}


def test_model_server_reports_predictions_to_the_sidecar(model_server, sink, monkeypatch):
    url, received = sink
    monkeypatch.setenv("MLMON_URL", url)
    app = model_server.create_app()
    client = app.test_client()
    ok = client.post("/predict", json={"features": CUSTOMER, "groups": {"gender": "female"}})
    assert ok.status_code == 200 and ok.json["prediction"] in (0, 1)
    bad = client.post("/predict", json={"features": {**CUSTOMER, "monthly_charges": "n/a"}})
    assert bad.status_code == 400
    _wait_for(lambda: sum(len(b["records"]) for _, b in received) >= 2)
    app.config["reporter"].close()
    records = [r for path, body in received if path == "/v1/predictions" for r in body["records"]]
    assert {body["model"] for _, body in received} == {"churn"}
    good, failed = records
    assert good["id"] == ok.json["id"] and good["groups"] == {"gender": "female"}
    assert set(good["prediction"]) == {"0", "1"} and good["latency_seconds"] >= 0
    assert failed["error"] is True and "prediction" not in failed


def test_model_server_keeps_serving_when_the_sidecar_is_down(model_server, monkeypatch):
    monkeypatch.setenv("MLMON_URL", f"http://127.0.0.1:{_closed_port()}")
    app = model_server.create_app()
    client = app.test_client()
    start = time.monotonic()
    for _ in range(50):
        assert client.post("/predict", json={"features": CUSTOMER}).status_code == 200
    assert time.monotonic() - start < 5, "reporting must not slow predictions down"
    reporter = app.config["reporter"]
    _wait_for(lambda: reporter.dropped >= 50)
    assert reporter.dropped >= 50
    reporter.close()


def test_reporter_drops_instead_of_blocking_when_full(model_server):
    reporter = model_server.SidecarReporter(f"http://127.0.0.1:{_closed_port()}", "m", "v",
                                            max_queue=5, flush_seconds=60)
    start = time.monotonic()
    for _ in range(100):
        reporter.report({"features": {}})
    assert time.monotonic() - start < 1
    assert reporter.dropped >= 90


def test_load_generator_drift_schedule():
    loadgen = _load("load_generator", EXAMPLES / "load_generator/load_generator.py")
    assert loadgen.drift_at(10, 900, 300) == 0
    assert loadgen.drift_at(1050, 900, 300) == pytest.approx(0.5)
    assert loadgen.drift_at(5000, 900, 300) == 1
    world = sys.modules["world"]
    calm = [world.sample_customer(random.Random(i))[0] for i in range(300)]
    drifted = [world.sample_customer(random.Random(i), 1.0)[0] for i in range(300)]
    mean = lambda rows, key: sum(r[key] for r in rows if r[key] is not None) / len(rows)  # noqa: E731
    assert mean(drifted, "age") < mean(calm, "age") - 5
    assert any(r["contract"] == "weekly" for r in drifted) and all(r["contract"] != "weekly" for r in calm)


def test_webhook_logger_logs_each_alert(capsys):
    logger = _load("webhook_logger", EXAMPLES / "webhook_logger/webhook_logger.py")
    server = ThreadingHTTPServer(("127.0.0.1", 0), logger.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    payload = {"version": "4", "status": "firing", "receiver": "demo", "alerts": [
        {"status": "firing", "labels": {"alertname": "MlmonFeatureDrift", "severity": "warning", "model": "churn"},
         "annotations": {"summary": "age drifted", "runbook_url": "docs/runbooks.md#drift"},
         "startsAt": "2024-01-01T00:00:00Z"},
        {"status": "resolved", "labels": {"alertname": "MlmonSLOBurnRateHigh", "severity": "critical"},
         "annotations": {}, "startsAt": "2024-01-01T00:00:00Z"}]}
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        req = urllib.request.Request(f"{base}/critical", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"received": 2}
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.shutdown()
        server.server_close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "FIRING MlmonFeatureDrift severity=warning model=churn" in lines[0] and "/critical" in lines[0]
    assert "runbook=docs/runbooks.md#drift" in lines[0]
    assert "RESOLVED MlmonSLOBurnRateHigh" in lines[1]


# -- the stack's data path, offline: baseline command → sidecar with the example config ---------

def _dashboard_metrics() -> set[str]:
    names = set()
    for path in (ROOT / "grafana/dashboards").glob("*.json"):
        names.update(re.findall(r"\bmlmon_[a-z0-9_]+", path.read_text(encoding="utf-8")))
    return names


@pytest.fixture(scope="module")
def demo_baseline(tmp_path_factory) -> Path:
    """Run the compose file's baseline command, with its paths mapped into a temp folder."""
    pytest.importorskip("pandas")
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "mlmon").exists() and shutil.which("mlmon") is None:
        pytest.skip("the mlmon console script is not installed (pip install -e .)")
    out = tmp_path_factory.mktemp("baseline")
    command = _services()["baseline"]["command"][0]
    command = command.replace("/var/lib/mlmon", shlex.quote(str(out)))
    command = command.replace("/example/model_server", shlex.quote(str(EXAMPLES / "model_server")))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "churn.baseline.json"


# Metrics that need joined labels (or the quality evaluation built on them).
LABEL_SIDE = {"mlmon_labels_total", "mlmon_labels_unmatched_total", "mlmon_labels_duplicate_total",
              "mlmon_labels_expired_total", "mlmon_label_delay_seconds_bucket", "mlmon_last_label_timestamp_seconds",
              "mlmon_confusion_total", "mlmon_model_quality", "mlmon_model_quality_baseline",
              "mlmon_model_quality_threshold", "mlmon_model_quality_estimated", "mlmon_fairness_gap",
              "mlmon_fairness_gap_threshold", "mlmon_model_health_score"}
# Counters created on first use (an error, a rejection, a type error, ...).
LAZY = {"mlmon_prediction_errors_total", "mlmon_ingest_rejected_total", "mlmon_feature_type_errors_total",
        "mlmon_unknown_features_total", "mlmon_labels_unmatched_total", "mlmon_labels_duplicate_total",
        "mlmon_labels_expired_total"}


@pytest.fixture(scope="module")
def demo_sidecar(demo_baseline):
    """The real sidecar with examples/mlmon.yaml, fed by the example model server and labels.

    Returns the /metrics exposition after one evaluation, and whether the labels were accepted.
    """
    config_mod = pytest.importorskip("exporter.config")
    service_mod = pytest.importorskip("exporter.service")
    server_mod = pytest.importorskip("exporter.server")
    pytest.importorskip("flask")
    from werkzeug.serving import make_server

    raw = yaml.safe_load((EXAMPLES / "mlmon.yaml").read_text(encoding="utf-8"))
    raw["models"][0]["baseline"] = str(demo_baseline)
    service = service_mod.Service(config_mod.config_from_dict(raw))
    http = make_server("127.0.0.1", 0, server_mod.create_app(service), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{http.server_port}"
    saved = os.environ.get("MLMON_URL")
    sys.path.insert(0, str(EXAMPLES / "model_server"))
    try:
        for mod in ("world", "model", "app"):
            sys.modules.pop(mod, None)
        import app as model_app
        import world

        os.environ["MLMON_URL"] = base
        app = model_app.create_app()
        client = app.test_client()
        rng = random.Random(1)
        outcomes = []
        for _ in range(300):
            features, groups = world.sample_customer(rng, 1.0)
            answer = client.post("/predict", json={"features": features, "groups": groups}).json
            outcomes.append({"id": answer["id"], "label": world.sample_label(rng, features, groups, 1.0)})
        app.config["reporter"].close()
        dropped = app.config["reporter"].dropped
        body = json.dumps({"model": "churn", "labels": outcomes}).encode()
        req = urllib.request.Request(f"{base}/v1/labels", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                labels_ok = resp.status == 200
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            labels_ok = False  # the exporter does not serve POST /v1/labels (yet)
        service.evaluate_due()
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            exposition = resp.read().decode()
    finally:
        http.shutdown()
        sys.path.remove(str(EXAMPLES / "model_server"))
        if saved is None:
            os.environ.pop("MLMON_URL", None)
        else:
            os.environ["MLMON_URL"] = saved
    return {"exposition": exposition, "labels_ok": labels_ok, "dropped": dropped}


def test_example_stack_predictions_feed_the_dashboards(demo_sidecar):
    """examples/mlmon.yaml is valid; the model server's records reach the real sidecar; the traffic,
    drift, data-quality and SLO metrics the dashboards query are all exposed."""
    exposition = demo_sidecar["exposition"]
    assert demo_sidecar["dropped"] == 0
    assert sample(exposition, "mlmon_predictions_total", model="churn", version="v1") == 300
    exposed = {name for name, _, _ in read_samples(exposition) if name.startswith("mlmon_")}
    missing = sorted(_dashboard_metrics() - LABEL_SIDE - LAZY - exposed)
    assert not missing, f"dashboards query metrics the exporter does not expose: {missing}"


def test_example_stack_labels_feed_the_quality_dashboard(demo_sidecar):
    if not demo_sidecar["labels_ok"]:
        pytest.skip("the exporter does not serve POST /v1/labels yet")
    exposed = {name for name, _, _ in read_samples(demo_sidecar["exposition"]) if name.startswith("mlmon_")}
    missing = sorted((_dashboard_metrics() & LABEL_SIDE) - LAZY - exposed)
    assert not missing, f"quality dashboard queries metrics the exporter does not expose: {missing}"
