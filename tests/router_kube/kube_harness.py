"""Shared pieces of the emulated-cluster router tests: the MultiModel, a router served on a free port,
backends pointed at the fake kubelet's runtimes, polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from kopf_harness import DEPLOYMENTS, eventually
from prometheus_client.parser import text_string_to_metric_families

from helpers.ports import free_port
from modelplex_router.app import create_app
from modelplex_router.kube_api import USER_AGENT
from modelplex_router.kube_backend import KubeBackend, KubeBackendSettings, cluster_catalog_source
from modelplex_router.settings import RouterSettings

NS = "models"


def multimodel(name: str, models: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelplex.dev/v1alpha1", "kind": "MultiModel",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {"models": models, **spec},
    }


MODELS = {
    "tiny": {"Plain": {"model_id": "org/tiny"}, "alias": "tiny"},
    "other": {"Plain": {"model_id": "org/other"}, "alias": "other"},
}


async def patch_deployment(cluster: Any, name: str, body: dict[str, Any], subresource: str = "") -> None:
    """A merge patch through the emulated API (as ``kubectl scale`` / a controller would), so that watches
    see it (a write to ``cluster.objects`` goes around them)."""
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}" + (f"/{subresource}" if subresource else "")
    async with httpx.AsyncClient(base_url=str(cluster.url), timeout=10) as api:
        resp = await api.patch(path, json=body, headers={"Content-Type": "application/merge-patch+json"})
        resp.raise_for_status()


def by_router(request: Any) -> bool:
    """A request the router's Kubernetes client made (not the operator's, the fake kubelet's, a test's)."""
    return bool(request.headers.get("User-Agent") == USER_AGENT)


def deployment_call(request: Any) -> str | None:
    """What a request to the emulated API does with Deployments: "watch", "list", "get", or None."""
    if request.method != "GET" or "/apis/apps/v1/" not in request.url.path or request.resource is None:
        return None
    if request.resource.plural != "deployments" or request.subresource:
        return None
    if request.params.get("watch") == "true":
        return "watch"
    return "list" if request.name is None else "get"


def router_deployment_reads(cluster: Any) -> list[str]:
    """The router's requests that read Deployments one by one or as lists (its watch streams not counted)."""
    return [f"{r.method} {r.url.path_qs}" for r in cluster if by_router(r) and deployment_call(r) in ("get", "list")]


def counting_observes(backend: KubeBackend) -> list[str]:
    """Every ``observe`` the router makes from now on (the monitor's ticks), by model."""
    seen: list[str] = []
    observe = backend.observe

    async def counted(api_id: str) -> Any:
        seen.append(api_id)
        return await observe(api_id)

    backend.observe = counted  # type: ignore[method-assign]
    return seen


async def settled_ticks(observes: list[str], model: str) -> None:
    """Until two more of the model's ticks have begun: one that began before (and may still be reading
    the Deployment with a GET) has ended by then."""
    ticks = observes.count(model)
    await eventually(lambda: observes.count(model) >= ticks + 2, 30)


def replicas(cluster: Any, name: str) -> int:
    return int(cluster.objects[DEPLOYMENTS, NS, name].raw["spec"].get("replicas") or 0)


@contextlib.asynccontextmanager
async def serving_router(backend: KubeBackend, watch: bool = False, **overrides: Any) -> AsyncIterator[str]:
    """The router app on a free port; ``watch``: it re-reads the MultiModels while it runs."""
    config = await backend.load_config()
    settings = RouterSettings(**{
        "backend": "kubernetes", "monitor_interval": 0.2, "max_wait_seconds": 60, "load_timeout_seconds": 60,
        "drain_grace_seconds": 2, "stop_grace_seconds": 5, "log_json": False, **overrides})
    app = create_app(settings, backend, config, cluster_catalog_source(backend, settings) if watch else None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, 20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def backend_for(cluster: Any, ports: dict[str, int], **kw: Any) -> KubeBackend:
    return KubeBackend(KubeBackendSettings(
        namespace=NS, multimodel="demo", api_url=str(cluster.url), poll_interval=0.1,
        service_urls={name.removeprefix("demo-"): f"http://127.0.0.1:{port}" for name, port in ports.items()},
        **kw))


def pod_backend(cluster: Any, **kw: Any) -> KubeBackend:
    """A backend that routes to the pods of each model's EndpointSlices (no Service URL override)."""
    return KubeBackend(KubeBackendSettings(
        namespace=NS, multimodel="demo", api_url=str(cluster.url), poll_interval=0.1, **kw))


async def chats_served(url: str) -> float:
    """Chat completions one runtime process has answered, by its own count (its /metrics)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelplex_runtime_requests_total" and sample.labels.get("endpoint") == CHAT_PATH
    )


async def replica_card(client: httpx.AsyncClient, model: str) -> dict[str, int]:
    """``replicas`` of the model's entry in /v1/models."""
    [card] = [m for m in (await client.get("/v1/models")).json()["data"] if m["id"] == model]
    return card["replicas"]


async def until(check: Any, within: float = 30.0) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"condition not met within {within}s"
        await asyncio.sleep(0.1)
    return result


async def model_ids(client: httpx.AsyncClient) -> list[str]:
    return [m["id"] for m in (await client.get("/v1/models")).json()["data"]]


async def status_of(client: httpx.AsyncClient, model: str) -> str:
    return (await client.post("/v1/models/status", json={"model_id": model})).json()["status"]


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
CHAT_PATH = "/v1/chat/completions"
