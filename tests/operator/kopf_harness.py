"""The operator running for real (kopf) against kmock's stateful Kubernetes emulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock

from modelplex_operator.__main__ import run_operator
from modelplex_operator.settings import OperatorSettings

MM = kmock.resource("modelplex.dev", "v1alpha1", "multimodels")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
EVENTS = kmock.resource("", "v1", "events")
PODS = kmock.resource("", "v1", "pods")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
ENDPOINTSLICES = kmock.resource("discovery.k8s.io", "v1", "endpointslices")
NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def declare_resources(k: Any) -> None:
    """What discovery must show: the CRD, Deployments (with scale/status), Services, Events, Leases, Pods and
    EndpointSlices."""
    k.resources[MM] = kmock.ResourceInfo(
        kind="MultiModel", singular="multimodel", namespaced=True, shortnames={"mm"},
        verbs={"list", "watch", "get", "patch", "create", "delete"}, subresources={"status"},
    )
    k.resources[DEPLOYMENTS] = kmock.ResourceInfo(
        kind="Deployment", singular="deployment", namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete"}, subresources={"status", "scale"},
    )
    k.resources[SERVICES] = kmock.ResourceInfo(
        kind="Service", singular="service", namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete"},
    )
    k.resources[EVENTS] = kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs={"create", "list"},
    )
    k.resources[LEASES] = kmock.ResourceInfo(
        kind="Lease", singular="lease", namespaced=True, verbs={"list", "get", "create", "patch", "delete"},
    )
    k.resources[PODS] = kmock.ResourceInfo(kind="Pod", singular="pod", namespaced=True, verbs={"list", "get"})
    k.resources[ENDPOINTSLICES] = kmock.ResourceInfo(
        kind="EndpointSlice", singular="endpointslice", namespaced=True,
        verbs={"list", "watch", "get", "create", "patch", "delete"},
    )
    # kopf's backbone: it waits for these to be discoverable before it starts watching anything.
    k.resources[NAMESPACES] = kmock.ResourceInfo(kind="Namespace", singular="namespace", namespaced=False,
                                                 verbs={"list", "watch", "get"})
    k.resources[CRDS] = kmock.ResourceInfo(kind="CustomResourceDefinition", singular="customresourcedefinition",
                                           namespaced=False, verbs={"list", "watch", "get"})


@contextlib.asynccontextmanager
async def running_operator(url: str, **overrides: Any) -> AsyncIterator[None]:
    settings = OperatorSettings(kube_api_url=url, resync_seconds=2.0, **overrides)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_operator(settings, stop_flag=stop, ready_flag=ready, liveness=False))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except (asyncio.CancelledError, TimeoutError):
            task.cancel()


async def eventually(check: Any, within: float = 30.0) -> Any:
    """Poll until check() returns a truthy value (or stops raising AssertionError); fail after timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            result = check()
            if result:
                return result
            last: Exception | None = AssertionError(f"{check} stayed falsy")
        except (AssertionError, KeyError) as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {last}")
        await asyncio.sleep(0.1)
