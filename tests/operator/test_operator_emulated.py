"""The operator running for real (kopf) against kmock's stateful Kubernetes emulator."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kopf_harness import DEPLOYMENTS, EVENTS, MM, PODS, SERVICES, eventually, running_operator

pytestmark = pytest.mark.integration

NS = "models"


def multimodel(name: str, models: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelplex.dev/v1alpha1",
        "kind": "MultiModel",
        # The emulator keeps whatever metadata it is given; kopf's patches test resourceVersion.
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {"models": models, **spec},
    }


TINY = {"Plain": {"model_id": "org/tiny-llama"}, "alias": "tiny", "pinned": True,
        "kubernetes": {"resources": {"gpus": 1, "memory": "8Gi"}, "startupTimeoutSeconds": 600,
                       "modelCache": {"pvcName": "hub-cache"}, "hfTokenSecret": {"name": "hf"}}}
EMBED = {"Embedding": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"}, "alias": "minilm"}


def status(cluster: Any, name: str) -> dict[str, Any]:
    return cluster.objects[MM, NS, name].get("status") or {}


def model_status(cluster: Any, name: str, model_id: str) -> dict[str, Any]:
    return (status(cluster, name).get("models") or {}).get(model_id) or {}


def deployment(cluster: Any, name: str) -> dict[str, Any]:
    return cluster.objects[DEPLOYMENTS, NS, name].raw


def exists(cluster: Any, resource: Any, name: str) -> bool:
    key = (resource, NS, name)
    return key in cluster.objects and not cluster.objects[key].deleted


def set_ready(cluster: Any, name: str, ready: int) -> None:
    """What the Deployment controller would report once the runtime's /ready answers."""
    cluster.objects[DEPLOYMENTS, NS, name].patch({"status": {"readyReplicas": ready, "replicas": ready}})


def status_patches(cluster: Any, name: str) -> int:
    return sum(1 for r in list(cluster) if r.method == "PATCH" and str(r.url).endswith(f"/multimodels/{name}/status"))


def event_reasons(cluster: Any) -> list[str]:
    # Events are created with generateName, which the emulator does not expand: read the requests.
    return [r.data.get("reason") for r in list(cluster)
            if r.method == "POST" and r.resource == EVENTS and isinstance(r.data, dict)]


async def test_create_status_follows_readiness_and_events(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"tiny": TINY, "minilm": EMBED}, defaultModelId="tiny")
    async with running_operator(str(cluster.url)):
        # The operator creates each model's Deployment, then its Service: wait for all four.
        await eventually(lambda: all(exists(cluster, kind, name) for kind in (DEPLOYMENTS, SERVICES)
                                     for name in ("demo-tiny", "demo-minilm")))

        dep = deployment(cluster, "demo-tiny")
        assert dep["spec"]["replicas"] == 1  # pinned: loaded from the start
        assert deployment(cluster, "demo-minilm")["spec"]["replicas"] == 0  # scale-to-zero until asked
        assert dep["metadata"]["ownerReferences"][0] == {
            "apiVersion": "modelplex.dev/v1alpha1", "kind": "MultiModel", "name": "demo", "uid": "uid-demo",
            "controller": True, "blockOwnerDeletion": True,
        }
        container = dep["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert args[args.index("--served-model-name") + 1] == "tiny"
        assert json.loads(args[args.index("--model-json") + 1])["Plain"]["model_id"] == "org/tiny-llama"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert container["startupProbe"]["httpGet"]["path"] == "/ready"
        assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 600
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        svc = cluster.objects[SERVICES, NS, "demo-tiny"].raw
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

        await eventually(lambda: model_status(cluster, "demo", "tiny").get("state") == "loading")
        await eventually(lambda: model_status(cluster, "demo", "minilm").get("state") == "unloaded")
        st = status(cluster, "demo")
        assert st["modelCount"] == 2 and st["defaultModel"] == "tiny"
        assert st["conditions"][0]["type"] == "Ready" and st["conditions"][0]["status"] == "True"
        assert st["observedGeneration"] == 1

        set_ready(cluster, "demo-tiny", 1)
        await eventually(lambda: model_status(cluster, "demo", "tiny").get("state") == "loaded")
        assert model_status(cluster, "demo", "tiny")["readyReplicas"] == 1
        await eventually(lambda: status(cluster, "demo").get("loadedCount") == 1)
        await eventually(lambda: "ModelStateChanged" in event_reasons(cluster))

        # A runtime that exits while loading: the pod crash-loops and status says so (before any deadline).
        set_ready(cluster, "demo-tiny", 0)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        cluster.objects[PODS, NS, "demo-tiny-abc12"] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo-tiny-abc12", "namespace": NS, "labels": labels},
            "status": {"containerStatuses": [{"name": "runtime", "state": {"waiting": {
                "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]},
        }
        await eventually(lambda: model_status(cluster, "demo", "tiny").get("state") == "failed")
        assert "CrashLoopBackOff" in model_status(cluster, "demo", "tiny")["message"]
        del cluster.objects[PODS, NS, "demo-tiny-abc12"]
        set_ready(cluster, "demo-tiny", 1)
        await eventually(lambda: model_status(cluster, "demo", "tiny").get("state") == "loaded")

        # A stalled rollout (e.g. weights never load within the deadline) is reported as failed.
        cluster.objects[DEPLOYMENTS, NS, "demo-tiny"].patch({"status": {"readyReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet has timed out progressing."}]}})
        await eventually(lambda: model_status(cluster, "demo", "tiny").get("state") == "failed")
        await eventually(lambda: status(cluster, "demo")["conditions"][0]["reason"] == "ModelFailed")


VLLM_MODEL = {"Plain": {"model_id": "Qwen/Qwen3-4B", "max_seq_len": 4096}, "alias": "qwen", "engine": "vllm",
              "tool_call_parser": "hermes", "engine_args": ["--enforce-eager"],
              "kubernetes": {"resources": {"gpus": 2}, "startupTimeoutSeconds": 1200}}


async def test_a_vllm_model_gets_its_vllm_container_with_the_mapped_args(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"qwen": VLLM_MODEL, "minilm": EMBED})
    async with running_operator(str(cluster.url), vllm_image="registry.local/vllm:v0.32.0"):
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "demo-qwen") and exists(cluster, SERVICES, "demo-qwen"))
        container = deployment(cluster, "demo-qwen")["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.local/vllm:v0.32.0"
        assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        assert container["args"] == [
            "--model", "Qwen/Qwen3-4B", "--served-model-name", "qwen", "--host", "0.0.0.0", "--port", "8000",
            "--max-model-len", "4096", "--tensor-parallel-size", "2",
            "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--disable-uvicorn-access-log",
            "--enforce-eager",
        ]
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 1200
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        # The transformers model beside it keeps the runtime image and its /ready probe.
        other = deployment(cluster, "demo-minilm")["spec"]["template"]["spec"]["containers"][0]
        assert other["command"] == ["python", "-m", "modelplex_runtime"]
        assert other["startupProbe"]["httpGet"]["path"] == "/ready"
        await eventually(lambda: model_status(cluster, "demo", "qwen").get("state") == "unloaded")


async def test_an_entry_its_engine_cannot_honour_is_an_invalid_spec(cluster: Any) -> None:
    bad = {"VisionPlain": {"model_id": "v", "max_edge": 512}, "engine": "vllm"}
    cluster.objects[MM, NS, "bad"] = multimodel("bad", {"v": bad})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: (status(cluster, "bad").get("conditions") or [{}])[0].get("reason") == "InvalidSpec")
        assert "VisionPlain.max_edge has no equivalent in engine vllm" in status(cluster, "bad")["conditions"][0]["message"]
        assert not exists(cluster, DEPLOYMENTS, "bad-v")


async def test_update_rolls_changed_model_adds_and_removes_never_touches_replicas(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"tiny": TINY, "minilm": EMBED})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "demo-minilm"))
        await eventually(lambda: model_status(cluster, "demo", "minilm").get("state"))
        # The router scaled the model up (replicas are the router's after creation).
        cluster.objects[DEPLOYMENTS, NS, "demo-minilm"].patch({"spec": {"replicas": 1}})
        old_hash = deployment(cluster, "demo-minilm")["spec"]["template"]["metadata"]["annotations"]
        tiny_before = copy.deepcopy(deployment(cluster, "demo-tiny"))

        changed = copy.deepcopy(EMBED)
        changed["Embedding"]["max_seq_len"] = 256
        cluster.objects[MM, NS, "demo"].patch({"metadata": {"generation": 2}, "spec": {"models": {
            "tiny": None,  # removed
            "minilm": changed,  # changed
            "qwen": {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},  # added
        }}})

        def rolled() -> bool:
            dep = deployment(cluster, "demo-minilm")
            args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            return json.loads(args[args.index("--model-json") + 1])["Embedding"].get("max_seq_len") == 256

        await eventually(rolled)
        dep = deployment(cluster, "demo-minilm")
        assert dep["spec"]["template"]["metadata"]["annotations"] != old_hash
        assert dep["spec"]["replicas"] == 1  # the operator never fought the router
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "demo-qwen") and exists(cluster, SERVICES, "demo-qwen"))
        await eventually(lambda: not exists(cluster, DEPLOYMENTS, "demo-tiny"))
        await eventually(lambda: not exists(cluster, SERVICES, "demo-tiny"))
        assert tiny_before["metadata"]["name"] == "demo-tiny"
        await eventually(lambda: "tiny" not in (status(cluster, "demo").get("models") or {}))
        await eventually(lambda: model_status(cluster, "demo", "Qwen/Qwen3-4B").get("state") == "unloaded")
        assert status(cluster, "demo")["observedGeneration"] == 2


async def test_invalid_spec_is_reported_and_the_operator_keeps_working(cluster: Any) -> None:
    bad = multimodel("bad", {"a": {"Plain": {"model_id": "x/y"}}, "b": {"Plain": {"model_id": "x/y"}}})
    cluster.objects[MM, NS, "bad"] = bad
    cluster.objects[MM, NS, "good"] = multimodel("good", {"minilm": EMBED})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "good-minilm"))
        await eventually(lambda: (status(cluster, "bad").get("conditions") or [{}])[0].get("reason") == "InvalidSpec")
        cond = status(cluster, "bad")["conditions"][0]
        assert cond["status"] == "False" and "both use the API id 'x/y'" in cond["message"]
        assert not exists(cluster, DEPLOYMENTS, "bad-a")
        await eventually(lambda: "InvalidSpec" in event_reasons(cluster))
        # Later passes (resyncs) over the same broken spec do not repeat the warning.
        patches_then = status_patches(cluster, "bad")
        await eventually(lambda: status_patches(cluster, "bad") >= patches_then + 2)
        assert event_reasons(cluster).count("InvalidSpec") == 1
        # Fixing the spec recovers without a restart.
        cluster.objects[MM, NS, "bad"].patch({"spec": {"models": {"b": {"Plain": {"model_id": "x/z"}}}}})
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "bad-a") and exists(cluster, DEPLOYMENTS, "bad-b"))
        await eventually(lambda: status(cluster, "bad")["conditions"][0]["status"] == "True")


async def test_restart_is_idempotent_and_recreates_missing_objects(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"minilm": EMBED})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: exists(cluster, SERVICES, "demo-minilm"))
        await eventually(lambda: model_status(cluster, "demo", "minilm").get("state") == "unloaded")
    creates_before = [r for r in list(cluster) if r.method == "POST" and "deployments" in str(r.url)]
    cluster.objects[DEPLOYMENTS, NS, "demo-minilm"].patch({"spec": {"replicas": 2}})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: any("multimodels" in str(r.url) and r.method == "PATCH" for r in list(cluster)[-50:]))
        # Someone deleted the Service by hand: the next pass puts it back.
        del cluster.objects[SERVICES, NS, "demo-minilm"]
        cluster.objects[DEPLOYMENTS, NS, "demo-minilm"].patch({"status": {"observedGeneration": 1}})
        await eventually(lambda: exists(cluster, SERVICES, "demo-minilm"))
    creates_after = [r for r in list(cluster) if r.method == "POST" and "deployments" in str(r.url)]
    assert len(creates_after) == len(creates_before) == 1
    assert deployment(cluster, "demo-minilm")["spec"]["replicas"] == 2


async def test_delete_leaves_children_to_the_garbage_collector(cluster: Any) -> None:
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"minilm": EMBED})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: exists(cluster, DEPLOYMENTS, "demo-minilm"))
        await eventually(lambda: model_status(cluster, "demo", "minilm"))
        resp = await cluster.request("DELETE", f"/apis/modelplex.dev/v1alpha1/namespaces/{NS}/multimodels/demo")
        assert resp.status == 200
        await eventually(lambda: not exists(cluster, MM, "demo"))
        # The API server's garbage collector deletes them through this reference; the emulator has none.
        for res in (DEPLOYMENTS, SERVICES):
            refs = cluster.objects[res, NS, "demo-minilm"].raw["metadata"]["ownerReferences"]
            assert refs[0]["uid"] == "uid-demo" and refs[0]["controller"] is True


async def test_objects_the_api_server_rejects_are_reported_not_retried_hot(cluster: Any) -> None:
    # A real API server refuses e.g. a malformed toleration; the schema cannot check free-form fields.
    cluster[f"post /apis/apps/v1/namespaces/{NS}/deployments"][:1] << 422 << {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
        "message": 'Deployment.apps "demo-minilm" is invalid: spec.template.spec.tolerations[0].operator: '
                   'Unsupported value: "Sometimes"'}
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"minilm": EMBED})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: "ApplyFailed" in event_reasons(cluster))
        conditions = [v.raw.get("status", {}).get("conditions") or [{}]
                      for v in cluster.objects[MM, NS, "demo"].history if v is not None]
        failed = [c[0] for c in conditions if c[0].get("reason") == "ApplyFailed"]
        assert failed and 'Unsupported value: "Sometimes"' in failed[0]["message"]
        assert failed[0]["status"] == "False"
