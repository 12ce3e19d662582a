"""The router's Kubernetes backend against kmock's emulator, with the operator running for real.

Chain under test: MultiModel -> operator creates Deployments (replicas 0) -> request to the router ->
backend scales the Deployment to 1 -> (fake kubelet starts a real runtime process, reports ready) ->
the request is served; unload -> replicas 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, MM, PODS, eventually
from kube_harness import (
    CHAT,
    MODELS,
    NS,
    backend_for,
    model_ids,
    multimodel,
    patch_deployment,
    replicas,
    serving_router,
    status_of,
    until,
)

from helpers.ports import free_port
from modelplex_router.backend import BackendLoadError
from modelplex_router.kube_objects import (
    ANNOTATION_API_ID,
    ANNOTATION_LAST_SCALING,
    ANNOTATION_LAST_USED,
    LABEL_MANAGED_BY,
    LABEL_MULTIMODEL,
    MANAGED_BY,
    config_from_multimodels,
    last_used_from,
)
from modelplex_router.settings import RouterSettings
from modelplex_spec import ConfigError

pytestmark = pytest.mark.integration


async def test_request_scales_up_holds_until_ready_and_unload_scales_to_zero(
    cluster: Any, deployed: dict[str, int]
) -> None:
    assert replicas(cluster, "demo-tiny") == 0
    backend = backend_for(cluster, deployed, pod_name="router-0")
    async with FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS) as kubelet, serving_router(backend) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            models = (await client.get("/v1/models")).json()
            assert [m["id"] for m in models["data"]] == ["default", "tiny", "other"]

            # Held while the Deployment scales up and the runtime loads, then served.
            resp = await client.post("/v1/chat/completions",
                                     json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"][0]["message"]["content"] == "t0 t1 t2 t3 t4"
            assert replicas(cluster, "demo-tiny") == 1 and replicas(cluster, "demo-other") == 0
            assert kubelet.starts == ["demo-tiny"]
            annotations = cluster.objects[DEPLOYMENTS, NS, "demo-tiny"].raw["metadata"]["annotations"]
            assert annotations[ANNOTATION_LAST_USED].endswith(" router-0")
            assert await backend.cluster_last_used("tiny") is not None
            # The operator sees the same Deployment become ready.
            await eventually(lambda: cluster.objects[MM, NS, "demo"].raw["status"]["models"]["tiny"]["state"] == "loaded")

            resp = await client.post("/v1/models/unload", json={"model_id": "tiny"})
            assert resp.status_code == 200 and resp.json()["status"] == "unloaded"
            assert replicas(cluster, "demo-tiny") == 0
            await eventually(lambda: "demo-tiny" not in kubelet.processes)
            await eventually(lambda: cluster.objects[MM, NS, "demo"].raw["status"]["models"]["tiny"]["state"] == "unloaded")

            # The default model, from scale zero again.
            resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert resp.status_code == 200 and resp.json()["model"] == "tiny"
            assert replicas(cluster, "demo-tiny") == 1 and kubelet.starts == ["demo-tiny", "demo-tiny"]


async def test_scaling_is_idempotent_across_router_replicas(cluster: Any, deployed: dict[str, int]) -> None:
    a, b = backend_for(cluster, deployed), backend_for(cluster, deployed)
    try:
        entry = (await a.load_config()).by_api_id()["other"]
        await asyncio.gather(a.ensure_started("other", entry), b.ensure_started("other", entry),
                             a.ensure_started("other", entry))
        assert replicas(cluster, "demo-other") == 1
        obs = await b.observe("other")
        assert obs.running and not obs.ready
        assert b.replicas("other").desired == 1 and not b.replicas("other").ready
        await asyncio.gather(a.stop("other", 0), b.stop("other", 0))
        assert replicas(cluster, "demo-other") == 0
        assert not (await a.observe("other")).running
    finally:
        await a.close()
        await b.close()


async def test_load_failures_give_reasons(cluster: Any, deployed: dict[str, int]) -> None:
    backend = backend_for(cluster, deployed)
    try:
        entry = (await backend.load_config()).by_api_id()["other"]
        await backend.ensure_started("other", entry)
        with pytest.raises(BackendLoadError, match="not ready after 0s"):
            await backend.wait_ready("other", 0)
        await patch_deployment(cluster, "demo-other", {"status": {"conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet has timed out progressing."}]}}, "status")
        with pytest.raises(BackendLoadError, match="timed out progressing"):
            await backend.wait_ready("other", 5)
        with pytest.raises(BackendLoadError, match="no Deployment for model 'ghost'"):
            await backend.ensure_started("ghost", entry)
    finally:
        await backend.close()


async def test_traffic_through_one_router_replica_keeps_the_others_from_idle_unloading(
    cluster: Any, deployed: dict[str, int]
) -> None:
    # 2 s: several times the pause between two of A's requests, even on a busy machine.
    cluster.objects[MM, NS, "demo"].patch({"spec": {"models": {"tiny": {"idle_timeout": 2}}}})
    a = backend_for(cluster, deployed, last_used_interval=0.2, pod_name="router-a")
    b = backend_for(cluster, deployed, last_used_interval=0.2, pod_name="router-b")
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS),
        serving_router(a) as url_a,
        serving_router(b) as url_b,
        httpx.AsyncClient(base_url=url_a, timeout=60) as client_a,
        httpx.AsyncClient(base_url=url_b, timeout=60) as client_b,
    ):
        assert (await client_b.post("/v1/chat/completions", json={"model": "tiny", **CHAT})).status_code == 200
        # Replica B sees no request of its own for several idle timeouts, but A serves the model all along.
        for _ in range(20):
            resp = await client_a.post("/v1/chat/completions", json={"model": "tiny", **CHAT})
            assert resp.status_code == 200, resp.text
            assert await status_of(client_b, "tiny") == "loaded"
            assert replicas(cluster, "demo-tiny") == 1
            await asyncio.sleep(0.15)
        # Once nobody uses it, it is unloaded, and both replicas know.
        await eventually(lambda: replicas(cluster, "demo-tiny") == 0)
        for client in (client_a, client_b):
            await until(lambda c=client: _is_unloaded(c))

        async def unloads() -> str:
            text = (await client_a.get("/metrics")).text + (await client_b.get("/metrics")).text
            # The replica that did not unload it sees the Deployment scaled away: not a crash.
            return text if 'modelplex_model_unloads_total{engine="transformers",model="tiny",reason="idle"}' in text else ""

        assert 'reason="crash"' not in await until(unloads)


async def _is_unloaded(client: httpx.AsyncClient) -> bool:
    return await status_of(client, "tiny") == "unloaded"


async def test_router_follows_models_added_to_and_removed_from_the_multimodel(
    cluster: Any, deployed: dict[str, int], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = tmp_path / "control.json"
    control.write_text('{"extra": {"token_delay": 0.3}}')
    monkeypatch.setenv("FAKE_RUNTIME_CONTROL", str(control))
    ports = {**deployed, "demo-extra": free_port()}
    backend = backend_for(cluster, ports)
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, ports, PODS),
        serving_router(backend, watch=True, catalog_refresh_seconds=0.2) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        assert await model_ids(client) == ["default", "tiny", "other"]
        cluster.objects[MM, NS, "demo"].patch({"metadata": {"generation": 2}, "spec": {
            "models": {"extra": {"Plain": {"model_id": "org/extra"}, "alias": "extra"}}, "defaultModelId": "other"}})
        await until(lambda: _listed(client, "extra"))
        assert await model_ids(client) == ["default", "tiny", "other", "extra"]
        # spec.defaultModelId is followed too (it was not set through the API).
        assert (await client.get("/v1/models/default")).json() == {"model_id": "other"}
        await eventually(lambda: (DEPLOYMENTS, NS, "demo-extra") in cluster.objects)
        resp = await client.post("/v1/chat/completions", json={"model": "extra", **CHAT})
        assert resp.status_code == 200 and resp.json()["model"] == "extra", resp.text

        # Removed while a request streams: the request finishes, new ones get 404.
        async with client.stream("POST", "/v1/chat/completions",
                                 json={"model": "extra", "stream": True, **CHAT}) as stream:
            assert stream.status_code == 200
            cluster.objects[MM, NS, "demo"].patch({"metadata": {"generation": 3}, "spec": {"models": {"extra": None}}})
            await until(lambda: _gone(client, "extra"))
            body = (await stream.aread()).decode()
        assert body.rstrip().endswith("data: [DONE]") and body.count("t4") == 1
        resp = await client.post("/v1/chat/completions", json={"model": "extra", **CHAT})
        assert resp.status_code == 404 and "Available models: default, tiny, other" in resp.json()["error"]["message"]
        assert (await client.post("/v1/models/status", json={"model_id": "extra"})).json()["status"] == "not_found"
        assert (await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})).status_code == 200


async def _listed(client: httpx.AsyncClient, model: str) -> bool:
    return model in await model_ids(client)


async def _gone(client: httpx.AsyncClient, model: str) -> bool:
    return model not in await model_ids(client)


def test_last_used_allows_for_the_write_throttle() -> None:
    dep = {"metadata": {"annotations": {ANNOTATION_LAST_USED: "2026-01-01T00:00:00.500Z router-0"}}}
    assert last_used_from(dep, 30) == 1767225600.5 + 30
    assert last_used_from({"metadata": {}}, 30) is None
    assert last_used_from({"metadata": {"annotations": {ANNOTATION_LAST_USED: "garbage"}}}, 30) is None


def test_config_from_multimodels_merges_a_namespace_and_rejects_clashes() -> None:
    a = multimodel("a", {"x": {"Plain": {"model_id": "org/x"}}}, defaultModelId="org/x")
    b = multimodel("b", {"y": {"Embedding": {"model_id": "org/y"}, "alias": "y", "pinned": None}})
    config, owners = config_from_multimodels([b, a])
    assert [m.entry.api_id for m in config.models] == ["org/x", "y"] and config.default_model_id == "org/x"
    assert owners == {"org/x": "a", "y": "b"}
    clash = multimodel("c", {"z": {"Plain": {"model_id": "org/x"}}})
    with pytest.raises(ConfigError, match="both use the API id 'org/x'"):
        config_from_multimodels([a, clash])


def test_router_and_operator_agree_on_labels_and_annotations() -> None:
    from modelplex_operator import naming

    assert (LABEL_MANAGED_BY, MANAGED_BY, LABEL_MULTIMODEL, ANNOTATION_API_ID, ANNOTATION_LAST_USED,
            ANNOTATION_LAST_SCALING) == (
        naming.LABEL_MANAGED_BY, naming.MANAGED_BY, naming.LABEL_MULTIMODEL, naming.ANNOTATION_API_ID,
        naming.ANNOTATION_LAST_USED, naming.ANNOTATION_LAST_SCALING)


async def test_load_cluster_config_reads_the_multimodel_before_the_router_starts(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelplex_router.kube_backend import build_kube_backend, load_cluster_config

    cluster.objects[MM, NS, "demo"] = multimodel("demo", MODELS, defaultModelId="other")
    monkeypatch.setenv("MODELPLEX_ROUTER_KUBE_NAMESPACE", NS)
    monkeypatch.setenv("MODELPLEX_ROUTER_KUBE_MULTIMODEL", "demo")
    monkeypatch.setenv("MODELPLEX_ROUTER_KUBE_API_URL", str(cluster.url))
    monkeypatch.setenv("MODELPLEX_ROUTER_KUBE_SERVICE_URLS", '{"tiny": "http://127.0.0.1:9"}')
    settings = RouterSettings(backend="kubernetes")
    # Runs its own event loop, as it does in the router's main() before uvicorn starts.
    config = await asyncio.to_thread(load_cluster_config, settings)
    assert [m.entry.api_id for m in config.models] == ["tiny", "other"]
    assert config.default_model_id == "other"
    backend = build_kube_backend(settings)
    assert backend.settings.namespace == NS and backend.url_for("tiny", "demo-tiny") == "http://127.0.0.1:9"
    assert backend.url_for("other", "demo-other") == f"http://demo-other.{NS}.svc:8000"
    await backend.close()
