"""The Kubernetes backend reads the models' Deployments from its watch (kube_deployments.py), on the
emulated cluster: a loaded model's monitor ticks make no Deployment request, a scale made outside the
router is seen, a Deployment recreated under another name is found, and before its watch has listed (or
while it fails) the backend reads with GETs."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, MM, PODS, eventually
from kube_harness import (
    CHAT,
    NS,
    backend_for,
    by_router,
    counting_observes,
    deployment_call,
    patch_deployment,
    pod_backend,
    replica_card,
    replicas,
    router_deployment_reads,
    serving_router,
    settled_ticks,
    status_of,
    until,
)

from modelplex_router.kube_backend import KubeBackend
from modelplex_router.kube_objects import ANNOTATION_API_ID, LABEL_MANAGED_BY, LABEL_MULTIMODEL, MANAGED_BY

pytestmark = pytest.mark.integration

PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"


async def test_a_loaded_models_ticks_make_no_deployment_requests_and_an_outside_scale_is_seen(
    cluster: Any, deployed: dict[str, int]
) -> None:
    cluster.objects[MM, NS, "demo"].patch({"spec": {"models": {"tiny": {
        "scaling": {"maxReplicas": 3, "scaleDownDelay": 600}}}}})
    backend = backend_for(cluster, deployed)
    observes = counting_observes(backend)
    async with (
        FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS) as kubelet,
        serving_router(backend) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        resp = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT})
        assert resp.status_code == 200, resp.text
        await eventually(lambda: backend.deployments.serving, 30)
        await settled_ticks(observes, "tiny")
        before, ticks = len(router_deployment_reads(cluster)), observes.count("tiny")
        # The monitor looks at the loaded model many times (every 0.2 s here), all from the watch's cache.
        await eventually(lambda: observes.count("tiny") >= ticks + 10, 30)
        assert router_deployment_reads(cluster)[before:] == []
        assert await status_of(client, "tiny") == "loaded"
        assert sum(1 for r in cluster if by_router(r) and deployment_call(r) == "watch") >= 1

        # `kubectl scale deployment demo-tiny --replicas=2`, through the API: the router sees it.
        await patch_deployment(cluster, "demo-tiny", {"spec": {"replicas": 2}}, "scale")
        await until(lambda: _desired_is(client, 2))
        await eventually(lambda: len(kubelet.pods_of("demo-tiny")) == 2, 30)
        assert replicas(cluster, "demo-tiny") == 2  # not undone: 2 is within the model's bounds
        assert router_deployment_reads(cluster)[before:] == []


async def _desired_is(client: httpx.AsyncClient, desired: int) -> bool:
    return (await replica_card(client, "tiny"))["desired"] == desired


def _deployment(name: str, api_id: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MULTIMODEL: "demo"},
                     "annotations": {ANNOTATION_API_ID: api_id}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
    }  # fmt: skip


async def test_a_deployment_recreated_under_another_name_is_found_by_the_watch(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No operator: the test creates the model's Deployment itself, deletes it, and creates it again
    under another name (as a renamed MultiModel model would have it)."""
    caplog.set_level(logging.INFO, logger="modelplex_router.kube")
    backend = pod_backend(cluster)
    async with httpx.AsyncClient(base_url=str(cluster.url), timeout=10) as kube:
        try:
            (await kube.post(PATH, json=_deployment("demo-other", "other", 0))).raise_for_status()
            # Before the watch has listed: read with a GET (and its name by a LIST), and logged.
            assert not (await backend.observe("other")).running
            await eventually(lambda: backend.deployments.serving, 30)
            reads = len(router_deployment_reads(cluster))
            assert not (await backend.observe("other")).running
            assert router_deployment_reads(cluster)[reads:] == []  # from the cache now
            await _watch_streams(cluster, backend, "demo-other")

            (await kube.delete(f"{PATH}/demo-other")).raise_for_status()
            (await kube.post(PATH, json=_deployment("demo-other-v2", "other", 1))).raise_for_status()
            # (Between the two the watch lists none: the backend looks it up, and finds none either.)
            await until(lambda: _running(backend, "other"))
            assert backend.replicas("other").desired == 1
            # The router's writes go to the new Deployment, and what it reads comes from the watch again.
            reads = len(router_deployment_reads(cluster))
            await backend.scale("other", 0, reason="test")
            assert replicas(cluster, "demo-other-v2") == 0
            assert not (await backend.observe("other")).running
            assert router_deployment_reads(cluster)[reads:] == []
        finally:
            await backend.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("reading its Deployment with a GET: the Deployment watch has not listed yet" in m for m in messages)
    assert any("its Deployment is now demo-other-v2" in m for m in messages)


async def _watch_streams(cluster: Any, backend: KubeBackend, name: str) -> None:
    """Until the watch has delivered an event: kmock 0.8 ignores the list's resourceVersion and streams
    only what happens once the watch request has subscribed, so a change in between would wait for the
    resync (an API server replays it from the list's resourceVersion)."""
    for attempt in range(100):
        version = backend.deployments.version
        await patch_deployment(cluster, name, {"metadata": {"annotations": {"test.modelplex.dev/probe": str(attempt)}}})
        try:
            await eventually(lambda v=version: backend.deployments.version > v, 0.5)
            return
        except AssertionError:
            continue
    raise AssertionError("the Deployment watch delivered no event")


async def _running(backend: KubeBackend, api_id: str) -> bool:
    return (await backend.observe(api_id)).running
