"""charts/modelplex: helm lint, helm template, every rendered manifest validated against Kubernetes schemas."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelplex"
KUBE_VERSION = "1.33.0"
# Kinds from other projects' CRDs that kubernetes-validate has no schema for, with their endpoint list.
FOREIGN_KINDS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}


def render(helm: Path, *sets: str, namespace: str = "modelplex") -> list[dict[str, Any]]:
    cmd = [str(helm), "template", "mp", str(CHART), "--namespace", namespace]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


VARIANTS = [
    (),
    ("operator.watchNamespaces={team-a,team-b}", "router.multiModel=assistants", "router.namespace=team-a"),
    ("router.ingress.enabled=true", "router.ingress.className=nginx", "serviceMonitor.enabled=true",
     "router.ingress.tls[0].secretName=tls", "router.ingress.tls[0].hosts[0]=modelplex.example.com"),
    ("crds.enabled=false", "router.enabled=false"),
    ("crds.keep=false", "operator.enabled=false", "image.tag=dev", "imagePullSecrets[0].name=regcred"),
]


def test_helm_lint(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("sets", VARIANTS, ids=lambda s: ",".join(s) or "defaults")
def test_every_rendered_manifest_is_valid(helm: Path, sets: tuple[str, ...]) -> None:
    docs = render(helm, *sets)
    assert docs
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            endpoints = doc["spec"][FOREIGN_KINDS[doc["kind"]]]
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and endpoints[0]["path"] == "/metrics"
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_chart_crd_is_the_generated_one(helm: Path) -> None:
    generated = yaml.safe_load((REPO / "crds" / "multimodels.modelplex.dev.yaml").read_text())
    docs = render(helm)
    crd = one(docs, "CustomResourceDefinition", "multimodels.modelplex.dev")
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert by_kind(render(helm, "crds.enabled=false"), "CustomResourceDefinition") == []
    unkept = one(render(helm, "crds.keep=false"), "CustomResourceDefinition", "multimodels.modelplex.dev")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})


def _verbs(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


# Exactly the calls each component makes (kopf: list+watch+patch of what it handles, create events).
OPERATOR_RBAC = {
    ("modelplex.dev", "multimodels"): {"get", "list", "watch", "patch"},
    ("modelplex.dev", "multimodels/status"): {"patch"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "create", "patch", "delete"},
    ("", "pods"): {"list"},
    ("", "events"): {"create"},
}
ROUTER_RBAC = {
    ("modelplex.dev", "multimodels"): {"get", "list"},
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "pods"): {"list"},
    ("coordination.k8s.io", "leases"): {"list", "create", "patch", "delete"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
}


def test_rbac_is_exactly_what_each_component_calls(helm: Path) -> None:
    docs = render(helm)
    assert _verbs(one(docs, "ClusterRole", "mp-modelplex-operator")["rules"]) == OPERATOR_RBAC
    binding = one(docs, "ClusterRoleBinding", "mp-modelplex-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mp-modelplex-operator", "namespace": "modelplex"}]
    router_role = one(docs, "Role", "mp-modelplex-router")
    assert router_role["metadata"]["namespace"] == "modelplex"
    assert _verbs(router_role["rules"]) == ROUTER_RBAC
    for doc in by_kind(docs, "Role") + by_kind(docs, "ClusterRole"):
        assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in doc["rules"])

    scoped = render(helm, "operator.watchNamespaces={team-a,team-b}", "router.namespace=team-a")
    assert by_kind(scoped, "ClusterRole") == [] and by_kind(scoped, "ClusterRoleBinding") == []
    roles = [d for d in by_kind(scoped, "Role") if d["metadata"]["name"] == "mp-modelplex-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(_verbs(r["rules"]) == OPERATOR_RBAC for r in roles)
    assert one(scoped, "Role", "mp-modelplex-router")["metadata"]["namespace"] == "team-a"


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_operator_and_router_deployments(helm: Path) -> None:
    docs = render(helm, "operator.watchNamespaces={team-a}", "runtimeImage.tag=1.2.3", "router.multiModel=demo")
    op = one(docs, "Deployment", "mp-modelplex-operator")
    pod = op["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["python", "-m", "modelplex_operator"]
    env = _env(c)
    assert env["MODELPLEX_OPERATOR_NAMESPACES"] == "team-a"
    assert env["MODELPLEX_OPERATOR_RUNTIME_IMAGE"] == "ghcr.io/modelplex/runtime:1.2.3"
    assert env["MODELPLEX_OPERATOR_VLLM_IMAGE"] == "vllm/vllm-openai:v0.32.0"
    assert env["MODELPLEX_OPERATOR_VLLM_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert op["spec"]["replicas"] == 1 and op["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "mp-modelplex-operator"

    router = one(docs, "Deployment", "mp-modelplex-router")
    rc = router["spec"]["template"]["spec"]["containers"][0]
    env = _env(rc)
    assert rc["command"] == ["python", "-m", "modelplex_router"]
    assert env["MODELPLEX_ROUTER_BACKEND"] == "kubernetes" and env["MODELPLEX_ROUTER_KUBE_MULTIMODEL"] == "demo"
    assert env["MODELPLEX_ROUTER_KUBE_NAMESPACE"] == "modelplex"
    assert env["MODELPLEX_ROUTER_AUTOSCALER"] == "true"
    svc = one(docs, "Service", "mp-modelplex-router")
    assert svc["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_the_built_in_autoscaler_can_be_turned_off(helm: Path) -> None:
    # For KEDA or an HPA on the router's gauges: the router then keeps no Leases, so it may not touch them.
    docs = render(helm, "router.autoscaler=false")
    env = _env(one(docs, "Deployment", "mp-modelplex-router")["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELPLEX_ROUTER_AUTOSCALER"] == "false"
    rules = _verbs(one(docs, "Role", "mp-modelplex-router")["rules"])
    assert ("coordination.k8s.io", "leases") not in rules


def test_routing_to_the_service_needs_no_endpointslice_access(helm: Path) -> None:
    default = render(helm)
    env = _env(one(default, "Deployment", "mp-modelplex-router")["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELPLEX_ROUTER_KUBE_ROUTE_TO"] == "pods"
    docs = render(helm, "router.routeTo=service")
    env = _env(one(docs, "Deployment", "mp-modelplex-router")["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELPLEX_ROUTER_KUBE_ROUTE_TO"] == "service"
    assert ("discovery.k8s.io", "endpointslices") not in _verbs(one(docs, "Role", "mp-modelplex-router")["rules"])


def test_vllm_image_is_a_value(helm: Path) -> None:
    docs = render(helm, "vllmImage.repository=registry.local/vllm", "vllmImage.tag=v0.32.0-cu128", "vllmImage.pullPolicy=Always")
    env = _env(one(docs, "Deployment", "mp-modelplex-operator")["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELPLEX_OPERATOR_VLLM_IMAGE"] == "registry.local/vllm:v0.32.0-cu128"
    assert env["MODELPLEX_OPERATOR_VLLM_IMAGE_PULL_POLICY"] == "Always"


def test_pod_monitor_scrapes_every_model_pod(helm: Path) -> None:
    docs = render(helm, "serviceMonitor.enabled=true", "operator.watchNamespaces={team-a}")
    monitor = one(docs, "PodMonitor", "mp-modelplex-runtimes")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "modelplex-runtime"}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["team-a", "modelplex"]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert by_kind(render(helm, "serviceMonitor.enabled=true", "serviceMonitor.runtimes=false"), "PodMonitor") == []
    assert by_kind(render(helm), "PodMonitor") == []


def test_ingress_points_at_the_router(helm: Path) -> None:
    docs = render(helm, "router.ingress.enabled=true", "router.ingress.annotations.a=b")
    ing = one(docs, "Ingress", "mp-modelplex-router")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "mp-modelplex-router", "port": {"name": "http"}}
    assert ing["metadata"]["annotations"] == {"a": "b"}
    assert by_kind(render(helm), "Ingress") == []


def test_notes_render(helm: Path) -> None:
    out = subprocess.run([str(helm), "install", "mp", str(CHART), "--dry-run=client", "--namespace", "ai"],
                         check=True, capture_output=True, text=True).stdout
    assert "kubectl port-forward -n ai svc/mp-modelplex-router" in out


@pytest.mark.parametrize(("bad", "message"), [
    ("operater.enabled=false", "additional properties 'operater' not allowed"),
    ("router.replicas=-1", "/router/replicas"),
    ("runtimeImage.pullPolicy=Sometimes", "/runtimeImage/pullPolicy"),
    ("vllmImage.tag=", "/vllmImage/tag"),
])
def test_values_schema_rejects_typos_and_bad_values(helm: Path, bad: str, message: str) -> None:
    result = subprocess.run([str(helm), "template", "mp", str(CHART), "--set", bad], capture_output=True, text=True)
    assert result.returncode != 0 and message in result.stderr
