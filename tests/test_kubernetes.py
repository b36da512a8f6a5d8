"""deploy/kubernetes/: manifests parse, core objects validate against the Kubernetes schemas offline
(kubernetes-validate ships them), the custom resources point at what they must, the ConfigMap holds
a valid mlmon config, and the PrometheusRule equals the rule files on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import config_from_dict

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
CORE_KINDS = {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests() if d["kind"] == kind]
    return doc


def test_every_manifest_parses_and_is_listed_in_the_kustomization():
    docs = manifests()
    assert {d["kind"] for d in docs} >= CORE_KINDS | {"ServiceMonitor", "PrometheusRule", "InferenceService",
                                                     "SeldonDeployment"}
    assert all(d.get("apiVersion") and d.get("metadata", {}).get("name") for d in docs)
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_objects_validate_against_the_kubernetes_schema(kind: str):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    doc = by_kind(kind)
    kubernetes_validate.validate(doc, version, strict=True)        # raises ValidationError on any mistake
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec" if "spec" in broken else "data"]["not_a_field"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_sidecar_container_has_probes_resources_config_baseline_and_state():
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    assert "configMap" in volumes["baseline"] and "emptyDir" in volumes["state"]
    config = config_from_dict(yaml.safe_load(by_kind("ConfigMap")["data"]["mlmon.yaml"]))
    for model in config.models:
        assert model.baseline and model.baseline.startswith(mounts["baseline"] + "/")
    assert config.server.listen.endswith(":" + str(container["ports"][0]["containerPort"]))


def test_loggers_and_scrape_point_at_the_sidecar_service():
    service = by_kind("Service")
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]
    url = f"http://{name}.default.svc.cluster.local:{port['port']}/v1/events"
    isvc = by_kind("InferenceService")
    assert isvc["spec"]["predictor"]["logger"] == {"mode": "all", "url": url}
    seldon = by_kind("SeldonDeployment")
    graph = seldon["spec"]["predictors"][0]["graph"]
    assert graph["logger"] == {"mode": "all", "url": url}
    monitor = by_kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    # the config routes both deployments to a configured model
    config = config_from_dict(yaml.safe_load(by_kind("ConfigMap")["data"]["mlmon.yaml"]))
    models = {m.name for m in config.models}
    assert isvc["metadata"]["name"] in models
    route = next(r for r in config.events.routes if ("inference_service", seldon["metadata"]["name"]) in r.match)
    assert ("component", graph["name"]) in route.match and route.model in models


def test_prometheusrule_equals_the_shipped_rule_files():
    shipped = []
    for path in sorted((ROOT / "alerting" / "rules").glob("*.yml")):
        shipped += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    assert by_kind("PrometheusRule")["spec"]["groups"] == shipped


def test_prometheusrule_generator_reproduces_the_file(tmp_path: Path):
    code = ("import runpy, sys; g = runpy.run_path(sys.argv[1]); sys.stdout.write(g['render']())")
    out = subprocess.run([sys.executable, "-c", code, str(DEPLOY / "generate_prometheusrule.py")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == (DEPLOY / "prometheusrule.yaml").read_text(encoding="utf-8")
