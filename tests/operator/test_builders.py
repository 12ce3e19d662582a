"""Desired-state builders, naming, planning and status: pure functions."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from modelplex_operator.builders import (
    Owner,
    RuntimeDefaults,
    build_deployment,
    build_service,
    initial_replicas,
    service_url,
)
from modelplex_operator.naming import ANNOTATION_LAST_SCALING, ANNOTATION_SPEC_HASH, object_name
from modelplex_operator.plan import plan
from modelplex_operator.status import ModelObservation, build_status, model_state, scalings, transitions
from modelplex_spec import ModelEntry
from modelplex_spec.engines import VLLM, runtime_entry_json

OWNER = Owner(name="demo", namespace="ai", uid="u-1")
DEFAULTS = RuntimeDefaults(image="ghcr.io/modelplex/runtime:0.1.0")


def entry(**kw: Any) -> ModelEntry:
    return ModelEntry.model_validate({"Plain": {"model_id": "Qwen/Qwen3-4B"}, **kw})


def container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_deployment_runs_the_runtime_with_the_entry_and_probes() -> None:
    e = entry(alias="qwen", in_situ_quant="Q4K", kubernetes={"startupTimeoutSeconds": 3600})
    dep = build_deployment(OWNER, "qwen3-4b", e, DEFAULTS, replicas=0)
    c = container(dep)
    assert c["image"] == "ghcr.io/modelplex/runtime:0.1.0"
    assert c["command"] == ["python", "-m", "modelplex_runtime"]
    args = c["args"]
    assert args[:4] == ["--host", "0.0.0.0", "--port", "8000"]
    assert args[args.index("--served-model-name") + 1] == "qwen"
    model = json.loads(args[args.index("--model-json") + 1])
    assert model == {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "alias": "qwen", "in_situ_quant": "Q4K"}
    assert ModelEntry.model_validate(model).api_id == "qwen"  # the runtime can read it
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 3600
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    kubernetes_validate.validate(dep, "1.33.0", strict=True)


def test_security_is_non_root_with_a_read_only_root_and_writable_tmp() -> None:
    dep = build_deployment(OWNER, "m", entry(), DEFAULTS)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/models"] == "model-cache"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    env = {v["name"]: v for v in c["env"]}
    assert env["HF_HOME"]["value"] == "/models" and "HF_TOKEN" not in env


def test_kubernetes_settings_reach_the_pod() -> None:
    k8s = {
        "image": "registry.local/runtime:dev", "imagePullPolicy": "Always",
        "resources": {"gpus": 2, "gpuResourceName": "amd.com/gpu", "cpu": "4", "memory": "32Gi", "cpuLimit": "8"},
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "priorityClassName": "inference",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "modelCache": {"pvcName": "hub", "mountPath": "/cache"},
        "hfTokenSecret": {"name": "hf-secret", "key": "token"},
    }
    dep = build_deployment(OWNER, "m", entry(kubernetes=k8s), DEFAULTS, replicas=1)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["image"] == "registry.local/runtime:dev" and c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"cpu": "4", "memory": "32Gi"},
                              "limits": {"cpu": "8", "memory": "32Gi", "amd.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == k8s["tolerations"] and pod["affinity"] == k8s["affinity"]
    assert pod["priorityClassName"] == "inference"
    env = {v["name"]: v for v in c["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-secret", "key": "token"}}
    assert env["HF_HOME"]["value"] == "/cache" and env["A"]["value"] == "1"
    assert env["B"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hub"}
    kubernetes_validate.validate(dep, "1.33.0", strict=True)


VLLM_ENTRY = {
    "Plain": {"model_id": "Qwen/Qwen3-4B", "max_seq_len": 8192, "dtype": "bf16"},
    "alias": "qwen",
    "engine": "vllm",
    "tool_call_parser": "hermes",
    "engine_args": ["--gpu-memory-utilization", "0.9"],
    "kubernetes": {
        "resources": {"gpus": 2, "memory": "64Gi"},
        "startupTimeoutSeconds": 2400,
        "modelCache": {"pvcName": "hub"},
        "hfTokenSecret": {"name": "hf"},
    },
}


def test_a_vllm_model_runs_vllms_server_with_the_mapped_args() -> None:
    e = ModelEntry.model_validate(VLLM_ENTRY)
    dep = build_deployment(OWNER, "qwen", e, DEFAULTS, replicas=0)
    c = container(dep)
    assert c["image"] == "vllm/vllm-openai:v0.32.0"
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert c["args"] == VLLM.launch(e, host="0.0.0.0", port=8000, served_model_name="qwen", gpus=2).args
    args = c["args"]
    assert args[:8] == ["--model", "Qwen/Qwen3-4B", "--served-model-name", "qwen", "--host", "0.0.0.0", "--port", "8000"]
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"  # the pod's GPUs
    assert args[args.index("--tool-call-parser") + 1] == "hermes"
    assert args[-2:] == ["--gpu-memory-utilization", "0.9"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # Probes on vLLM's /health, the startup probe holding the loading budget.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 2400
    kubernetes_validate.validate(dep, "1.33.0", strict=True)


def test_a_vllm_pod_is_non_root_with_writable_caches_shm_and_the_hub_cache() -> None:
    dep = build_deployment(OWNER, "qwen", ModelEntry.model_validate(VLLM_ENTRY), DEFAULTS, replicas=1)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["automountServiceAccountToken"] is False
    env = {v["name"]: v.get("value", v.get("valueFrom")) for v in c["env"]}
    assert env["HF_HOME"] == "/models"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}
    writable = ["HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT",
                "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "NUMBA_CACHE_DIR", "OUTLINES_CACHE_DIR"]
    assert all(env[name].startswith("/tmp") for name in writable)
    assert env["USER"] == "modelplex" and env["VLLM_NO_USAGE_STATS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert c["workingDir"] == "/tmp"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/models": "model-cache", "/tmp": "tmp", "/dev/shm": "dshm"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hub"}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_the_vllm_image_comes_from_the_defaults_or_the_model() -> None:
    defaults = RuntimeDefaults(image="ghcr.io/modelplex/runtime:0.1.0", vllm_image="registry.local/vllm:cu128",
                               vllm_image_pull_policy="Always")
    e = ModelEntry.model_validate(VLLM_ENTRY)
    assert (container(build_deployment(OWNER, "q", e, defaults))["image"],
            container(build_deployment(OWNER, "q", e, defaults))["imagePullPolicy"]) == ("registry.local/vllm:cu128", "Always")
    own = ModelEntry.model_validate({**VLLM_ENTRY, "kubernetes": {"image": "registry.local/vllm:mine"}})
    assert container(build_deployment(OWNER, "q", own, defaults))["image"] == "registry.local/vllm:mine"
    assert container(build_deployment(OWNER, "m", entry(), defaults))["image"] == "ghcr.io/modelplex/runtime:0.1.0"
    # Changing the engine changes the pod template: the pods roll.
    a = build_deployment(OWNER, "m", entry(), defaults)
    b = build_deployment(OWNER, "m", entry(engine="vllm"), defaults)
    assert a["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != b["metadata"]["annotations"][ANNOTATION_SPEC_HASH]


def test_service_selects_the_deployment_pods() -> None:
    e = entry()
    dep = build_deployment(OWNER, "m", e, DEFAULTS)
    svc = build_service(OWNER, "m", e)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["metadata"]["ownerReferences"] == dep["metadata"]["ownerReferences"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert service_url(svc["metadata"]["name"], "ai") == "http://demo-m.ai.svc:8000"
    kubernetes_validate.validate(svc, "1.33.0", strict=True)


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, 0),
    ({"pinned": True}, 1),
    # A preloaded model starts at the autoscaler's floor; the load takes it further.
    ({"preload": True, "kubernetes": {"maxReplicas": 3}}, 1),
    ({"preload": True, "scaling": {"minReplicas": 2, "maxReplicas": 3}}, 2),
    ({"kubernetes": {"minReplicas": 1, "maxReplicas": 2}}, 1),
    ({"scaling": {"minReplicas": 2, "maxReplicas": 4}}, 2),
])
def test_initial_replicas(kw: dict[str, Any], expected: int) -> None:
    assert initial_replicas(entry(**kw)) == expected


def test_scaling_settings_do_not_roll_the_pods() -> None:
    # Changing the replica range or the routing policy is the router's business, not a new pod template.
    plain = build_deployment(OWNER, "m", entry(), DEFAULTS)
    scaled = build_deployment(OWNER, "m", entry(scaling={"maxReplicas": 4, "routing": "prefix-affinity"}), DEFAULTS)
    assert plain["spec"]["template"] == scaled["spec"]["template"]


def test_spec_hash_follows_the_entry_not_the_replicas() -> None:
    a = build_deployment(OWNER, "m", entry(), DEFAULTS, replicas=0)
    b = build_deployment(OWNER, "m", entry(), DEFAULTS, replicas=5)
    c = build_deployment(OWNER, "m", entry(alias="x"), DEFAULTS, replicas=0)
    h = [d["metadata"]["annotations"][ANNOTATION_SPEC_HASH] for d in (a, b, c)]
    assert h[0] == h[1] != h[2]
    assert c["spec"]["template"]["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == h[2]  # rolls the pods


def test_runtime_entry_json_leaves_out_kubernetes_settings() -> None:
    data = json.loads(runtime_entry_json(entry(pinned=True, kubernetes={"resources": {"gpus": 1}})))
    assert "kubernetes" not in data and data["pinned"] is True


@pytest.mark.parametrize(("mm", "label", "expected"), [
    ("demo", "qwen3-4b", "demo-qwen3-4b"),
    ("demo", "Qwen3_4B", None),
    ("demo", "a" * 80, None),
    ("9x", "m", "m-9x-m"),
])
def test_object_names_are_dns_labels_and_unique(mm: str, label: str, expected: str | None) -> None:
    name = object_name(mm, label)
    if expected:
        assert name == expected
    assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
    assert all((ch.isalnum() and ch.islower()) or ch.isdigit() or ch == "-" for ch in name)
    assert object_name("demo", "a_b") != object_name("demo", "a-b")


def test_plan_creates_updates_deletes_and_never_sends_replicas_on_update() -> None:
    e = entry()
    want = build_deployment(OWNER, "keep", e, DEFAULTS, replicas=0)
    new = build_deployment(OWNER, "new", e, DEFAULTS, replicas=0)
    stale = build_deployment(OWNER, "keep", entry(alias="old"), DEFAULTS, replicas=0)
    gone = build_deployment(OWNER, "gone", e, DEFAULTS, replicas=0)
    actions = plan(
        {"demo-keep": want, "demo-new": new}, {},
        {"demo-keep": stale, "demo-gone": gone}, {},
    )
    summary = [(a.verb, a.name) for a in actions]
    assert summary == [("update", "demo-keep"), ("create", "demo-new"), ("delete", "demo-gone")]
    update = actions[0].body
    assert update is not None and "replicas" not in update["spec"]
    assert actions[1].body is not None and actions[1].body["spec"]["replicas"] == 0
    assert plan({"demo-keep": want}, {}, {"demo-keep": want}, {}) == []  # idempotent


def _dep(replicas: int, ready: int = 0, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"readyReplicas": ready, "conditions": conditions or []}}


def test_model_states() -> None:
    assert model_state(None)[0] == "loading"
    assert model_state(_dep(0))[0] == "unloaded"
    assert model_state(_dep(1))[0] == "loading"
    assert model_state(_dep(1, 1)) == ("loaded", "1/1 replicas ready")
    stalled = [{"type": "Progressing", "status": "False", "message": "timed out"}]
    assert model_state(_dep(1, 0, stalled)) == ("failed", "timed out")
    pulling = {"metadata": {"name": "p1"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}}
    creating = {"metadata": {"name": "p2"}, "status": {"containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert model_state(_dep(1), (creating,))[0] == "loading"
    assert model_state(_dep(1), (creating, pulling)) == ("failed", "pod p1: ImagePullBackOff: not found")


def test_status_keeps_transition_times_and_removes_gone_models() -> None:
    obs = [ModelObservation("qwen", "q", "demo-q", _dep(1, 1))]
    first = build_status(obs, "qwen", {}, "T1", 1)
    assert first["models"]["qwen"]["lastTransitionTime"] == "T1" and first["loadedCount"] == 1
    assert transitions({}, first) == [("qwen", None, "loaded")]
    second = build_status(obs, "qwen", {**first, "models": {**first["models"], "old": {"state": "loaded"}}}, "T2", 2)
    assert second["models"]["qwen"]["lastTransitionTime"] == "T1"
    assert second["models"]["old"] is None  # a merge patch deletes it
    assert second["conditions"][0]["lastTransitionTime"] == "T1" and second["observedGeneration"] == 2
    assert transitions(first, second) == []


def test_status_shows_the_last_scaling_decision_and_each_new_one_is_an_event() -> None:
    dep = _dep(2, 1)
    quiet = build_status([ModelObservation("qwen", "q", "demo-q", dep)], "qwen", {}, "T1", 1)
    assert "lastScaling" not in quiet["models"]["qwen"] and scalings({}, quiet) == []
    decision = "2026-01-01T00:00:00.000Z 1 -> 2 (router-0): load 9.0 is 9.0 per replica, above the target 8"
    dep["metadata"] = {"annotations": {ANNOTATION_LAST_SCALING: decision}}
    scaled = build_status([ModelObservation("qwen", "q", "demo-q", dep)], "qwen", quiet, "T2", 1)
    assert scaled["models"]["qwen"]["lastScaling"] == decision
    assert scalings(quiet, scaled) == [("qwen", decision)]
    assert scalings(scaled, scaled) == []  # a resync of the same decision is no new event
