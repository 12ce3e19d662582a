"""The Kubernetes backend under faults, on the emulated cluster (kmock + the fake kubelet): API errors
around a load, pods that take their time to go, a crash whose clean-up is slow."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import kmock
import pytest
from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, MM, PODS, eventually
from kube_harness import CHAT, NS, backend_for, replicas, serving_router, status_of, until

from modelplex_router.kube_objects import ready_replicas, stop_bound

pytestmark = pytest.mark.integration


async def test_a_failed_last_used_write_does_not_fail_the_load(cluster: Any, deployed: dict[str, int]) -> None:
    # Every annotation patch fails (the scale subresource still works).
    cluster["patch", DEPLOYMENTS, kmock.data({"metadata": {}})] << 500
    backend = backend_for(cluster, deployed, pod_name="router-0")
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS),
        serving_router(backend) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        resp = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})
        assert resp.status_code == 200, resp.text
        assert replicas(cluster, "demo-tiny") == 1
        assert await status_of(client, "tiny") == "loaded"
        assert 'modelplex_model_loads_total{engine="transformers",model="tiny",result="success"} 1.0' in (await client.get("/metrics")).text


async def test_api_errors_while_loading_and_after_ready_fail_no_waiter(cluster: Any, deployed: dict[str, int]) -> None:
    """One GET of the Deployment fails while the pod starts, and the first one after it is ready (the
    router's post-load look at it): the load goes on and every waiting request is served."""
    decided: dict[int, bool] = {}
    state = {"failed_loading": False, "saw_ready": False, "failed_ready": False}

    def flaky(request: Any) -> bool:
        if id(request) in decided:
            return decided[id(request)]
        fail = False
        if request.method == "GET" and request.url.path.endswith("/deployments/demo-tiny"):
            dep = cluster.objects[DEPLOYMENTS, NS, "demo-tiny"].raw
            wanted = int((dep.get("spec") or {}).get("replicas") or 0)
            if state["saw_ready"] and not state["failed_ready"]:
                state["failed_ready"] = fail = True
            elif ready_replicas(dep) >= 1:
                state["saw_ready"] = True
            elif wanted >= 1 and not state["failed_loading"]:
                state["failed_loading"] = fail = True
        decided[id(request)] = fail
        return fail

    cluster[flaky] << 500
    backend = backend_for(cluster, deployed)
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS),
        serving_router(backend) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        replies = await asyncio.gather(
            *(client.post("/v1/chat/completions", json={"model": "tiny", **CHAT}) for _ in range(5))
        )
        assert [r.status_code for r in replies] == [200] * 5, [r.text for r in replies]
        assert state == {"failed_loading": True, "saw_ready": True, "failed_ready": True}
        assert await status_of(client, "tiny") == "loaded"


async def test_stop_returns_once_the_pods_are_gone(cluster: Any, deployed: dict[str, int]) -> None:
    backend = backend_for(cluster, deployed)
    try:
        async with FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS) as kubelet:
            kubelet.slow_stop["demo-other"] = 1.5  # the runtime drains for a while after SIGTERM
            entry = (await backend.load_config()).by_api_id()["other"]
            await backend.ensure_started("other", entry)
            await backend.wait_ready("other", 30)
            assert kubelet.pod_exists("demo-other")
            await backend.stop("other", 5)
            # Not merely no longer counted by the Deployment: the pod (and its GPU) is gone.
            assert not kubelet.pod_exists("demo-other")
            assert "demo-other" not in kubelet.processes
            assert replicas(cluster, "demo-other") == 0
    finally:
        await backend.close()


def test_stop_waits_as_long_as_the_pods_may_take() -> None:
    dep = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 120}}}}
    assert stop_bound(dep, 10) == 135
    assert stop_bound({"spec": {}}, 10) == 45  # Kubernetes' default grace of 30 s
    assert stop_bound({"spec": {}}, 60) == 75


async def test_a_crash_being_cleaned_up_does_not_hold_up_other_models(cluster: Any, deployed: dict[str, int]) -> None:
    cluster.objects[MM, NS, "demo"].patch({"spec": {"models": {"tiny": {"idle_timeout": 1}}}})
    backend = backend_for(cluster, deployed, last_used_interval=0.2)
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS) as kubelet,
        serving_router(backend) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        for model in ("other", "tiny"):
            assert (await client.post("/v1/chat/completions", json={"model": model, **CHAT})).status_code == 200
        kubelet.slow_stop["demo-other"] = 8  # its pod takes long to go once scaled down
        kubelet.crash("demo-other")
        await until(lambda: _status_is(client, "other", "failed"))
        # While the crashed model's pod is still being waited for, the idle model is unloaded on time.
        await until(lambda: _status_is(client, "tiny", "unloaded"))
        assert kubelet.pod_exists("demo-other")
        await eventually(lambda: not kubelet.pod_exists("demo-other"), 30)
        error = (await client.post("/v1/models/status", json={"model_id": "other"})).json()["error"]
        assert "the runtime crashed (simulated)" in error
        # The next request brings it back.
        resp = await client.post("/v1/chat/completions", json={"model": "other", **CHAT})
        assert resp.status_code == 200, resp.text
        metrics = (await client.get("/metrics")).text
        assert 'modelplex_model_unloads_total{engine="transformers",model="other",reason="crash"} 1.0' in metrics
        assert 'modelplex_model_unloads_total{engine="transformers",model="tiny",reason="idle"} 1.0' in metrics


async def _status_is(client: httpx.AsyncClient, model: str, status: str) -> bool:
    return await status_of(client, model) == status
