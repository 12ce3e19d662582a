"""The list + watch behind per-pod routing (kube_watch.ListWatch), on the kmock emulator: it follows
EndpointSlices as they are created and deleted, retries a failed list after a back-off, and re-lists on
its resync period, which also brings in a change whose watch event was lost."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from kopf_harness import ENDPOINTSLICES, eventually
from kube_harness import NS

from modelplex_router.endpoint_slices import LABEL_SERVICE_NAME, ready_endpoints
from modelplex_router.kube_api import KubeApi
from modelplex_router.kube_watch import ListWatch

pytestmark = pytest.mark.integration

PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def _slice(name: str, service: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": name, "namespace": NS, "labels": {LABEL_SERVICE_NAME: service}},
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": f"{name}-pod"}}],
    }  # fmt: skip


async def test_the_watch_follows_slices_recovers_from_errors_and_resyncs(cluster: Any) -> None:
    failed: list[str] = []

    def first_list_fails(request: Any) -> bool:
        is_list = request.method == "GET" and request.url.path == PATH and request.url.query.get("watch") != "true"
        if is_list and not failed:
            failed.append(str(request.url))
            return True
        return False

    cluster[first_list_fails] << 500
    api = KubeApi(NS, str(cluster.url))
    snapshots: list[dict[str, Any]] = []
    watch = ListWatch(
        "EndpointSlices", await api.endpoint_slice_lister(), NS, LABEL_SERVICE_NAME,
        lambda objects: snapshots.append(dict(objects)),
        resync_seconds=1, request_timeout=0.5, retry_initial=0.05,
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=str(cluster.url)) as kube:
        (await kube.post(PATH, json=_slice("a", "demo-tiny", "10.0.0.1"))).raise_for_status()
        task = asyncio.create_task(watch.run())
        try:
            # The first list failed (a 500), the retry after the back-off worked.
            await eventually(lambda: watch.synced.is_set(), 10)
            assert failed and watch.problem is None and set(watch.objects) == {"a"}
            # Changes arrive as events.
            (await kube.post(PATH, json=_slice("b", "demo-other", "10.0.0.2"))).raise_for_status()
            await eventually(lambda: set(watch.objects) == {"a", "b"}, 10)
            (await kube.delete(f"{PATH}/a")).raise_for_status()
            await eventually(lambda: set(watch.objects) == {"b"}, 10)
            assert "a" in snapshots[-2] and "a" not in snapshots[-1]
            # A change made without an event (as if the event was lost) comes in with the next re-list.
            lists = watch.lists
            cluster.objects[ENDPOINTSLICES, NS, "b"].patch({"endpoints": [
                {"addresses": ["10.0.0.3"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "b2"}}]})
            await eventually(lambda: watch.lists > lists, 10)
            [pod] = ready_endpoints(watch.objects.values(), "http", 8000)
            assert (pod.pod, pod.url) == ("b2", "http://10.0.0.3:8000")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()


async def test_resync_now_ends_the_stream_and_lists_again(cluster: Any) -> None:
    """What the Deployment watch asks for when one of the router's writes does not show up in time."""
    api = KubeApi(NS, str(cluster.url))
    # A resync period far beyond the test: only resync_now can make it list again.
    watch = ListWatch("EndpointSlices", await api.endpoint_slice_lister(), NS, LABEL_SERVICE_NAME,
                      lambda objects: None, resync_seconds=3600, retry_initial=0.05)  # fmt: skip
    async with httpx.AsyncClient(base_url=str(cluster.url)) as kube:
        (await kube.post(PATH, json=_slice("a", "demo-tiny", "10.0.0.1"))).raise_for_status()
        watch.start()
        try:
            await eventually(lambda: watch.synced.is_set(), 10)
            first = watch.listed_at
            assert watch.lists == 1 and first is not None
            # Changed without an event (as if it was lost): the stream cannot bring it, the list does.
            cluster.objects[ENDPOINTSLICES, NS, "a"].patch({"metadata": {"labels": {"changed": "yes"}}})
            await eventually(lambda: watch.streaming, 10)
            watch.resync_now()
            await eventually(lambda: watch.lists == 2, 10)
            assert watch.listed_at is not None and watch.listed_at > first
            assert watch.objects["a"]["metadata"]["labels"]["changed"] == "yes"
        finally:
            await watch.close()
            await api.close()
