"""The Kubernetes manifests in deploy/kubernetes: every built-in resource validated against the
Kubernetes OpenAPI schemas in strict mode (PyPI kubernetes-validate, offline), every kustomization
listing exactly its folder's files, every agentgov.yaml inside a ConfigMap valid against agentgov's
own schema, the sidecar's Envoy bootstrap exactly what `agentgov envoy-config` prints, and the
security settings a platform team expects. CRDs (Envoy Gateway, Istio) are parsed and checked for
the fields agentgov needs; their schemas are not available offline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import Result
from jsonschema import Draft202012Validator

from agentgov.engine.config import schema
from tests.conftest import REPO

K8S = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
BUILT_IN = ("v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1")


def _documents(folder: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((K8S / folder).glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, doc


@pytest.mark.parametrize("folder", ["central", "sidecar"])
def test_every_resource_is_valid_kubernetes_in_strict_mode(folder: str) -> None:
    checked = 0
    for path, doc in _documents(folder):
        assert doc["apiVersion"] in BUILT_IN, path
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("folder", ["central", "sidecar"])
def test_each_kustomization_lists_its_folder(folder: str) -> None:
    kustomization = yaml.safe_load((K8S / folder / "kustomization.yaml").read_text())
    files = {p.name for p in (K8S / folder).glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def _configmap_configs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for folder in ("central", "sidecar"):
        for path, doc in _documents(folder):
            if doc["kind"] == "ConfigMap" and "agentgov.yaml" in doc.get("data", {}):
                found.append((f"{folder}/{path.name}", yaml.safe_load(doc["data"]["agentgov.yaml"])))
    return found


def test_the_agentgov_yaml_in_each_configmap_passes_agentgovs_schema() -> None:
    configs = _configmap_configs()
    assert len(configs) == 2
    validator = Draft202012Validator(schema())
    for where, config in configs:
        problems = [e.message for e in validator.iter_errors(config)]
        assert problems == [], where


def test_the_sidecar_envoy_is_what_envoy_config_prints(run_cli: Callable[..., Result]) -> None:
    result = run_cli("envoy-config", "--listen-host", "0.0.0.0", "--backend", "llm-backend.agents.svc:8080",
                     "--agentgov-socket-dir", "/run/agentgov", "--workers", "2", "--ext-proc")
    assert result.exit_code == 0, result.output
    shipped = next(doc for _, doc in _documents("sidecar") if doc["metadata"]["name"] == "agent-gateway-envoy")
    assert yaml.safe_load(shipped["data"]["envoy.yaml"]) == yaml.safe_load(result.output)


def _containers(folder: str) -> list[dict[str, Any]]:
    return [c for _, doc in _documents(folder) if doc["kind"] == "Deployment"
            for c in doc["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("folder", ["central", "sidecar"])
def test_containers_run_as_non_root_read_only_with_no_capabilities(folder: str) -> None:
    pods = [doc["spec"]["template"]["spec"] for _, doc in _documents(folder) if doc["kind"] == "Deployment"]
    assert all(p["securityContext"]["runAsNonRoot"] is True for p in pods)
    assert all(p["automountServiceAccountToken"] is False for p in pods)
    for container in _containers(folder):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "limits" in container["resources"]


def test_secrets_come_by_reference_only() -> None:
    for folder in ("central", "sidecar"):
        for path, doc in _documents(folder):
            assert doc["kind"] != "Secret", f"{path}: secrets are created apart and referenced, never shipped"
    for where, config in _configmap_configs():
        text = yaml.safe_dump(config)
        assert "token:" not in text and "password" not in text, where  # noqa: PT018


def test_workers_follow_the_cpu_limit() -> None:
    for folder in ("central", "sidecar"):
        agentgov = next(c for c in _containers(folder) if "agentgov" in c["image"])
        env = {e["name"]: e for e in agentgov["env"]}
        assert env["AGENTGOV_WORKERS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_only_the_gateways_may_call_the_central_service() -> None:
    policy = next(doc for _, doc in _documents("central") if doc["kind"] == "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    callers = [rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in policy["spec"]["ingress"]]
    assert callers == ["gateways", "observability"]


def test_the_mesh_integrations_fail_closed_with_the_body_and_the_edge_address() -> None:
    gateway = list(yaml.safe_load_all((K8S / "integrations" / "envoy-gateway-securitypolicy.yaml").read_text()))
    ext_auth = gateway[0]["spec"]["extAuth"]
    assert ext_auth["failOpen"] is False
    assert ext_auth["http"]["backendRefs"][0]["port"] == 9292
    assert ext_auth["bodyToExtAuth"]["maxRequestBytes"] > 0
    assert gateway[1]["spec"]["clientIPDetection"]["xForwardedFor"]["numTrustedHops"] == 0
    istio = list(yaml.safe_load_all((K8S / "integrations" / "istio.yaml").read_text()))
    provider = istio[0]["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzHttp"]
    assert provider["failOpen"] is False
    assert provider["statusOnError"] == "503"
    assert provider["includeRequestBodyInCheck"]["maxRequestBytes"] > 0
    assert istio[1]["spec"]["action"] == "CUSTOM"
    assert istio[1]["spec"]["provider"]["name"] == istio[0]["spec"]["meshConfig"]["extensionProviders"][0]["name"]
