"""Several routers on one emulated cluster: one holds the scaling lease and decides on every router's
load; the others never write a replica count; when the leader goes, another takes over."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, LEASES, MM, PODS, eventually
from kube_harness import NS, backend_for, replicas

from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.kube_backend import KubeBackend
from modelplex_router.kube_objects import ANNOTATION_LAST_SCALING
from modelplex_router.metrics import RouterMetrics
from modelplex_router.scaler import Scaler
from modelplex_router.settings import RouterSettings

FAST = {"lease_renew_interval": 0.2, "lease_duration": 2.0}


async def rounds(backends: dict[str, KubeBackend], loads: dict[str, dict[str, float]], seconds: float) -> set[str]:
    """Every backend syncs its lease for ``seconds``; never two leaders at once. Returns who led."""
    led: set[str] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for name, backend in backends.items():
            await backend.publish(loads.get(name, {}))
        leaders = {name for name, backend in backends.items() if backend.leading}
        assert len(leaders) <= 1, leaders
        led |= leaders
        await asyncio.sleep(0.05)
    return led


async def test_one_router_leads_and_sees_the_others_load(cluster: Any, deployed: dict[str, int]) -> None:
    a = backend_for(cluster, deployed, pod_name="router-a", **FAST)
    b = backend_for(cluster, deployed, pod_name="router-b", **FAST)
    c = backend_for(cluster, deployed, pod_name="router-c", **FAST)
    backends = {"a": a, "b": b, "c": c}
    try:
        loads = {"a": {"tiny": 3.0}, "b": {"tiny": 2.0, "other": 1.0}, "c": {}}
        [first] = await rounds(backends, loads, 1.0)
        leader = backends[first]
        assert leader.cluster_load("tiny", loads[first].get("tiny", 0)) == 5.0
        assert leader.cluster_load("other", loads[first].get("other", 0)) == 1.0
        # A leader that stops renewing (frozen, cut off from the API) stops leading on its own clock, and
        # another takes the next term only after that: never two at once.
        rest = {name: backend for name, backend in backends.items() if name != first}
        await rounds(rest, loads, 0.5)
        assert not any(backend.leading for backend in rest.values())
        [second] = await rounds(rest, loads, 3.0)
        assert not leader.leading
        # The load of a router that stopped reporting no longer counts.
        assert rest[second].cluster_load("tiny", loads[second].get("tiny", 0)) == 5.0 - loads[first].get("tiny", 0)
        # A leader that closes hands over at once (it deletes its term and its load report).
        await rest.pop(second).close()
        [third] = await rounds(rest, loads, 1.0)
        assert third not in (first, second)
        names = [key[2] for key in cluster.objects if key[0] == LEASES and not cluster.objects[key].deleted]
        assert f"modelplex-load-router-{second}" not in names
        assert sum(name.startswith("modelplex-scaler-") for name in names) == 1  # old terms deleted
    finally:
        for backend in backends.values():
            await backend.close()


async def test_two_routers_never_write_conflicting_replica_counts(cluster: Any, deployed: dict[str, int]) -> None:
    cluster.objects[MM, NS, "demo"].patch({"spec": {"models": {"tiny": {
        "scaling": {"maxReplicas": 3, "targetRequests": 1, "window": 0.5, "scaleDownDelay": 1}}}}})
    routers = {"a": backend_for(cluster, deployed, pod_name="router-a", **FAST),
               "b": backend_for(cluster, deployed, pod_name="router-b", **FAST)}  # fmt: skip
    writes: list[tuple[str, int]] = []
    for name, backend in routers.items():
        original = backend._scale

        async def recorded(dep: str, count: int, name: str = name, original: Any = original) -> None:
            writes.append((name, count))
            await original(dep, count)

        backend._scale = recorded  # type: ignore[method-assign]
    settings = RouterSettings(log_json=False, drain_grace_seconds=1, max_wait_seconds=30, load_timeout_seconds=30)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with FakeKubelet(cluster, DEPLOYMENTS, NS, deployed, PODS):
            coords = {}
            for name, backend in routers.items():
                entry = (await backend.load_config()).by_api_id()["tiny"]
                coords[name] = ModelCoordinator("tiny", entry, backend, settings, RouterMetrics())
                await coords[name].load()
            assert replicas(cluster, "demo-tiny") == 1  # a load starts the floor; the autoscaler does the rest
            load_writes = len(writes)
            # Three requests in flight over the two routers, against a target of one per replica.
            for name, count in (("a", 2), ("b", 1)):
                for _ in range(count):
                    coords[name].occupancy.enter()
            for name, backend in routers.items():
                scaler = Scaler(lambda c=coords[name]: [c], backend, 0.1, True, coords[name].metrics)
                tasks.append(asyncio.create_task(scaler.run()))
            await eventually(lambda: replicas(cluster, "demo-tiny") == 3, 20)
            for name, count in (("a", 2), ("b", 1)):
                for _ in range(count):
                    coords[name].occupancy.leave()
            await eventually(lambda: replicas(cluster, "demo-tiny") == 1, 20)
            scaled = writes[load_writes:]
            # One router made every scaling write: only up to 3, then only down to 1 (the window's average
            # may pass through 2 either way, and the other router's load may reach the leader a tick late);
            # no write undoes another.
            counts = [count for _, count in scaled]
            assert len({name for name, _ in scaled}) == 1, writes
            peak = counts.index(3)
            assert counts[: peak + 1] == sorted(counts[: peak + 1]), writes
            assert counts[peak:] == sorted(counts[peak:], reverse=True) and counts[-1] == 1, writes
            leader = scaled[0][0]
            # Recorded once the backend's scale call has returned (the write above is its first step).
            await eventually(lambda: (coords[leader].last_scaling or (0, 0, 0))[2] == 1, 10)
            # The decision is recorded on the Deployment, for the MultiModel's status and an Event.
            annotations = cluster.objects[DEPLOYMENTS, NS, "demo-tiny"].raw["metadata"]["annotations"]
            assert f" -> 1 (router-{leader}): load called for" in annotations[ANNOTATION_LAST_SCALING]
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for backend in routers.values():
            await backend.close()
