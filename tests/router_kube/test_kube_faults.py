"""The Kubernetes backend under faults, on the emulated cluster (kmock + the fake kubelet): API errors
around a load, pods that take their time to go, a crash whose clean-up is slow, a hung pod, a vLLM pod
that crash-loops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, MM, PODS, eventually, running_operator
from kube_harness import (
    CHAT,
    NS,
    backend_for,
    by_router,
    counting_observes,
    deployment_call,
    multimodel,
    replicas,
    router_deployment_reads,
    serving_router,
    settled_ticks,
    status_of,
    until,
)

from helpers.ports import free_port
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


async def test_api_errors_while_loading_and_after_ready_fail_no_waiter(
    cluster: Any, deployed: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router's Deployment watch fails from the start (every watch request) and so does every list of
    Deployments once the model is scaled up, so the backend falls back to GETs; of those, one fails while
    the pod starts and the first one after it is ready (the router's post-load look at it). The load goes
    on, every waiting request is served, and once the API works again the watch serves the Deployments."""
    # The runtime takes 2 s to turn ready: the load waits on GETs (the watch failing) for a while.
    control = tmp_path / "control.json"
    control.write_text('{"tiny": {"load_delay": 2}}')
    monkeypatch.setenv("FAKE_RUNTIME_CONTROL", str(control))
    decided: dict[int, bool] = {}
    state = {"failed_loading": False, "saw_ready": False, "failed_ready": False}
    failed = {"watch": 0, "list": 0}

    def flaky(request: Any) -> bool:
        if id(request) in decided:
            return decided[id(request)]
        fail = False
        call = deployment_call(request) if by_router(request) else None
        if call is not None and not state["failed_ready"]:  # the API fails until the post-load look failed
            dep = cluster.objects[DEPLOYMENTS, NS, "demo-tiny"].raw
            wanted = int((dep.get("spec") or {}).get("replicas") or 0)
            if call == "watch" or (call == "list" and wanted >= 1):
                failed[call] += 1
                fail = True
            elif call == "get" and request.name == "demo-tiny":
                if state["saw_ready"]:
                    state["failed_ready"] = fail = True
                elif ready_replicas(dep) >= 1:
                    state["saw_ready"] = True
                elif wanted >= 1 and not state["failed_loading"]:
                    state["failed_loading"] = fail = True
        decided[id(request)] = fail
        return fail

    cluster[flaky] << 500
    backend = backend_for(cluster, deployed)
    observes = counting_observes(backend)
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
        assert failed["watch"] >= 1 and failed["list"] >= 1, failed
        assert await status_of(client, "tiny") == "loaded"
        # The API works again: the watch lists, and the loaded model is read from it.
        await eventually(lambda: backend.deployments.serving, 60)
        await settled_ticks(observes, "tiny")
        reads = len(router_deployment_reads(cluster))
        assert (await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})).status_code == 200
        assert (await backend.observe("tiny")).ready
        assert router_deployment_reads(cluster)[reads:] == []


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
        await kubelet.crash("demo-other")
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


async def test_a_hung_pod_is_left_to_its_liveness_probe(cluster: Any, deployed: dict[str, int]) -> None:
    """A frozen runtime (the fake kubelet's fake runtime, SIGSTOPped): declared hung by the router's health
    checks, its waiting request gets 503 at once, the Deployment stays scaled up (other replicas of the
    router may serve it) and, once the kubelet has restarted the container, the next request is served."""
    backend = backend_for(cluster, deployed)
    fast_checks = {"health_check_interval_seconds": 0.3, "health_check_timeout_seconds": 0.5,
                   "health_check_failures": 3}
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS) as kubelet,
        serving_router(backend, **fast_checks) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        assert (await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})).status_code == 200
        kubelet.freeze("demo-tiny")
        try:
            reply = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "runtime_unresponsive", reply.text
            assert reply.headers["retry-after"]
            card = (await client.post("/v1/models/status", json={"model_id": "tiny"})).json()
            assert card["status"] == "failed" and card["error"].startswith("hung: no answer to GET /health"), card
            assert replicas(cluster, "demo-tiny") == 1  # not scaled down: left to the liveness probe
            metrics = (await client.get("/metrics")).text
            assert 'modelplex_model_unloads_total{engine="transformers",model="tiny",reason="hung"} 1.0' in metrics
        finally:
            await kubelet.restart("demo-tiny")
        resp = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})
        assert resp.status_code == 200, resp.text
        assert kubelet.starts.count("demo-tiny") == 2 and await status_of(client, "tiny") == "loaded"


async def _status_is(client: httpx.AsyncClient, model: str, status: str) -> bool:
    return await status_of(client, model) == status


# The end of a vLLM container's log, as the kubelet keeps it for a container that wrote no termination
# message (the operator sets terminationMessagePolicy: FallbackToLogsOnError); vLLM 0.32's words, shortened.
VLLM_LOG_TAIL = """\
(APIServer pid=1) INFO 12-01 11:13:26 [api_utils.py:286] non-default args: {'port': 8000, 'model': 'org/v'}
Traceback (most recent call last):
    raise OSError(f"It looks like the config file at '{resolved_config_file}' is not a valid JSON file.")
OSError: It looks like the config file at '/cache/org/v/config.json' is not a valid JSON file.
INFO:     Finished server process [1]
"""


async def test_a_crash_looping_vllm_pod_fails_its_load_with_vllms_reason(cluster: Any) -> None:
    """No fake kubelet (it cannot run vLLM): the test plays the kubelet of one crash-looping vLLM pod."""
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"v": {"Plain": {"model_id": "org/v"}, "alias": "v",
                                                              "engine": "vllm"}})
    cause = "OSError: It looks like the config file at '/cache/org/v/config.json' is not a valid JSON file."

    def operator_says() -> str:
        status = cluster.objects[MM, NS, "demo"].raw.get("status") or {}
        return str(((status.get("models") or {}).get("v") or {}).get("message", ""))

    async with running_operator(str(cluster.url)):
        await eventually(lambda: (DEPLOYMENTS, NS, "demo-v") in cluster.objects)
        template = cluster.objects[DEPLOYMENTS, NS, "demo-v"].raw["spec"]["template"]
        assert template["spec"]["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
        cluster.objects[PODS, NS, "demo-v-abc12"] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo-v-abc12", "namespace": NS, "labels": template["metadata"]["labels"]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "runtime",
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 10s restarting failed container=runtime"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": VLLM_LOG_TAIL}},
            }]},
        }
        # Scaled up by hand first: the operator's status names vLLM's reason.
        cluster.objects[DEPLOYMENTS, NS, "demo-v"].patch({"spec": {"replicas": 1}})
        await eventually(lambda: cause in operator_says())
        assert operator_says() == f"pod demo-v-abc12: CrashLoopBackOff: {cause}"

        async def kubelet() -> None:  # once scaled down, the pod goes
            await eventually(lambda: replicas(cluster, "demo-v") == 0, 60)
            del cluster.objects[PODS, NS, "demo-v-abc12"]

        gone = asyncio.create_task(kubelet())
        backend = backend_for(cluster, {"demo-v": free_port()})
        async with serving_router(backend) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            reply = await client.post("/v1/chat/completions", json={"model": "v", **CHAT})
            error = reply.json()["error"]
            assert reply.status_code == 503 and error["code"] == "model_load_failed", reply.text
            assert f"pod demo-v-abc12: CrashLoopBackOff: {cause}" in error["message"]
            assert "back-off 10s" not in error["message"] and reply.headers["retry-after"]
            card = (await client.post("/v1/models/status", json={"model_id": "v"})).json()
            assert card["status"] == "failed" and cause in card["error"]
            await gone
