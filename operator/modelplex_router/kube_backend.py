"""The Kubernetes backend: each model's runtime is a Deployment + Service the operator created.

* Discovery: the models come from MultiModel resources (one by name, or every one in a namespace);
  each model's Deployment is found by the labels and ``modelplex.dev/api-id`` annotation the operator
  puts on it, so the router never re-derives the operator's naming.
* Deployments are read from one watch (``kube_deployments.py``: a list + watch over the namespace, not
  a GET per model per tick); the router's own writes stay laid over the cache until the watch shows
  them (``deployment_writes.py``). Before the watch has listed, or while it fails, a GET (logged).
* Load = scale the Deployment (scale subresource) to ``maxReplicas`` unless it has at least that
  many; unload = scale it to ``minReplicas`` (normally 0). Both are absolute writes, so several router
  replicas doing the same thing at once converge to the same count.
* Replicas = the model's pods, from its Service's EndpointSlices (``kube_endpoints.py``: a watch, not a
  poll): one replica per ready pod, at ``http://<pod address>:8000``, so the router picks a pod per
  request (``MODELPLEX_ROUTER_KUBE_ROUTE_TO=pods``, the default). With ``route_to=service``, or for a
  model with a URL override (``service_urls``: tests, clusters where the router may not watch
  EndpointSlices), the model has one replica: its Service (kube-proxy spreads connections, not requests).
* Ready = a ready pod in the slices answers its engine's readiness path with 200 (``/ready`` for the
  modelplex runtime, ``/health`` for vLLM); with the Service, the Deployment reports a ready replica
  and the Service URL answers it. Both watches wake a load's wait.
* Last use is written (throttled) as the ``modelplex.dev/last-used`` annotation on the Deployment, so
  every router replica can tell when *any* replica last used a model.

Only ``kubernetes_asyncio`` and ``httpx`` are used (the API calls are ``kube_api.py``); the router never
imports kopf or the operator.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from modelplex_router.backend import BackendLoadError, BackendObservation, ModelBackend, Replica, Replicas
from modelplex_router.kube_api import KubeApi, transient_api_error
from modelplex_router.kube_deployments import Deployments
from modelplex_router.kube_endpoints import EndpointWatch
from modelplex_router.kube_lease import ScalingLease
from modelplex_router.kube_objects import (
    ANNOTATION_LAST_SCALING,
    ANNOTATION_LAST_USED,
    RUNTIME_PORT,
    config_from_multimodels,
    deployment_problem,
    last_used_from,
    load_target,
    now_iso,
    parse_iso,
    ready_replicas,
    spec_replicas,
    stop_bound,
)
from modelplex_router.kube_pods import pod_problem_of, pods_left
from modelplex_router.kube_settings import KubeBackendSettings
from modelplex_router.replica_board import ReplicaBoard
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelEntry, ModelplexConfig
from modelplex_spec.engines import TRANSFORMERS, engine_for

log = logging.getLogger("modelplex_router.kube")


@dataclass
class _Model:
    entry: ModelEntry | None = None
    last_written: float = 0.0


# -- the backend -------------------------------------------------------------------------------------


class KubeBackend:
    """ModelBackend over Deployments (see the module docstring and modelplex_router.backend)."""

    def __init__(
        self, settings: KubeBackendSettings, api: Any | None = None, http: httpx.AsyncClient | None = None
    ):
        self.settings = settings
        self.api = KubeApi(settings.namespace, settings.api_url, api)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        self._models: dict[str, _Model] = {}
        self._board = ReplicaBoard()
        self.endpoints = EndpointWatch(
            self._board, self.api.endpoint_slice_lister, settings.namespace, settings.endpoints_resync
        )
        self.deployments = Deployments(self.api, settings.multimodel, settings.deployments_resync, on_found=self._found)
        self.lease = ScalingLease(
            functools.partial(self.api.lease, settings.multimodel or "all"),
            settings.multimodel or "all",
            settings.pod_name or f"router-{uuid.uuid4().hex[:8]}",
            settings.lease_duration,
            settings.lease_renew_interval,
        )

    # -- SharedLoad: several routers share the Deployments; the one holding the scaling lease decides
    # (kube_lease.py), on every router's reported load.

    @property
    def leading(self) -> bool:
        return self.lease.leading

    async def publish(self, loads: Mapping[str, float]) -> None:
        # Bounded: the autoscaler's tick waits for it.
        await asyncio.wait_for(self.lease.sync(loads), self.settings.lease_duration)

    def cluster_load(self, api_id: str, own: float) -> float:
        return own + self.lease.others(api_id)

    # -- replicas ---------------------------------------------------------------------------------

    def by_pods(self, api_id: str) -> bool:
        """The model's requests go to its pods (else to its Service, or the URL override)."""
        return self.settings.route_to == "pods" and api_id not in self.settings.service_urls

    def replicas(self, api_id: str) -> Replicas:
        return self._board.get(api_id)

    async def replicas_changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        return await self._board.changed(api_id, version, timeout_seconds)

    def _found(self, api_id: str, deployment: str) -> None:
        if self.by_pods(api_id):
            self.endpoints.follow(api_id, deployment)  # the operator names the Service so

    def _publish(self, api_id: str, dep: Mapping[str, Any], ready: bool) -> Replicas:
        if self.by_pods(api_id):  # the members are the EndpointSlice watch's
            return self._board.publish(api_id, desired=spec_replicas(dep))
        name = dep["metadata"]["name"]
        members = [Replica(name, self.url_for(api_id, name), True)] if ready else []
        return self._board.publish(api_id, desired=spec_replicas(dep), members=members)

    async def scale(self, api_id: str, replicas: int, *, reason: str, remove: Sequence[str] = ()) -> None:
        dep = await self._deployment(api_id)
        name, before = dep["metadata"]["name"], spec_replicas(dep)
        log.info("scaling %s to %d: %s", name, replicas, reason, extra={"model": api_id})
        await self._scale(name, replicas)
        self._board.publish(api_id, desired=replicas)
        # The decision, for the MultiModel's status and a Kubernetes Event (the operator reads it).
        record = f"{now_iso()} {before} -> {replicas} ({self.lease.identity}): {reason}"
        try:
            await self._annotate(name, {ANNOTATION_LAST_SCALING: record})
        except Exception as exc:
            log.warning("model %s: cannot record the scaling decision: %s", api_id, exc, extra={"model": api_id})

    async def _scale(self, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        self.deployments.wrote(name, patch, await self.api.scale_deployment(name, replicas))

    async def _annotate(self, name: str, annotations: dict[str, str]) -> None:
        patch = {"metadata": {"annotations": annotations}}
        self.deployments.wrote(name, patch, await self.api.patch_deployment(name, patch))

    # -- discovery -------------------------------------------------------------------------------

    async def list_multimodels(self) -> list[dict[str, Any]]:
        return await self.api.multimodels(self.settings.multimodel)

    async def load_config(self, default_model_id: str | None = None) -> ModelplexConfig:
        config, _ = config_from_multimodels(await self.list_multimodels(), default_model_id)
        for m in config.models:
            self._models.setdefault(m.entry.api_id, _Model()).entry = m.entry
        return config

    async def _deployment(self, api_id: str) -> dict[str, Any]:
        return await self.deployments.get(api_id)

    def url_for(self, api_id: str, deployment: str) -> str:
        override = self.settings.service_urls.get(api_id)
        if override:
            return override.rstrip("/")
        # The operator names the Service like the Deployment.
        return f"http://{deployment}.{self.settings.namespace}.svc:{RUNTIME_PORT}"

    # -- ModelBackend ----------------------------------------------------------------------------

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        self._models.setdefault(api_id, _Model()).entry = entry
        if self.by_pods(api_id):
            await self.endpoints.start()
        dep = await self._deployment(api_id)
        loaded, _ = load_target(entry)
        if spec_replicas(dep) < loaded:
            log.info("scaling %s up to %d", dep["metadata"]["name"], loaded, extra={"model": api_id})
            await self._scale(dep["metadata"]["name"], loaded)
        try:
            await self.note_used(api_id, force=True)
        except Exception as exc:
            # Only the other replicas' idle decisions read it: the load goes on (the next use retries).
            log.warning("model %s: cannot record its use: %s", api_id, exc, extra={"model": api_id})

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> Replicas:
        deadline = time.monotonic() + timeout_seconds
        last_reason = "no ready replica yet"
        if self.by_pods(api_id):
            await self.endpoints.start()
        while True:
            version, dep_version = self._board.get(api_id).version, self.deployments.version
            try:
                dep = await self._deployment(api_id)
            except Exception as exc:
                if not transient_api_error(exc) or time.monotonic() >= deadline:
                    raise
                # A blip of the API server is no reason to fail a load that may be nearly done.
                last_reason = f"the Kubernetes API failed: {exc}"
                log.warning("model %s: %s; still waiting", api_id, last_reason, extra={"model": api_id})
                await asyncio.sleep(self.settings.poll_interval)
                continue
            name = dep["metadata"]["name"]
            problem = deployment_problem(dep)
            if problem:
                raise BackendLoadError(problem)
            if spec_replicas(dep) == 0:
                raise BackendLoadError(f"deployment {name} was scaled to zero while the model was loading")
            entry = self._models[api_id].entry if api_id in self._models else None
            engine = engine_for(entry) if entry is not None else TRANSFORMERS
            urls = self._ready_urls(api_id, dep)
            for url in urls:
                if await self._answers_ready(url + engine.ready_path):
                    return self._publish(api_id, dep, True)
            if urls:
                last_reason = f"{urls[0]}{engine.ready_path} does not answer 200 yet"
            else:
                last_reason = self.endpoints.waiting_for(name) if self.by_pods(api_id) else "no ready replica yet"
                problem = await pod_problem_of(self.api, dep, engine)
                if problem:
                    raise BackendLoadError(problem)
            if time.monotonic() >= deadline:
                raise BackendLoadError(
                    f"model {api_id!r} not ready after {timeout_seconds:.0f}s: {last_reason}"
                )
            # Woken early by the watches: the model's pods or any Deployment changed.
            await self._until_changed(api_id, version, dep_version, deadline)

    async def _until_changed(self, api_id: str, version: int, dep_version: int, deadline: float) -> None:
        timeout = min(self.settings.poll_interval, deadline - time.monotonic())
        waits = [
            asyncio.ensure_future(self._board.changed(api_id, version, timeout)),
            asyncio.ensure_future(self.deployments.changed(dep_version, timeout)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _ready_urls(self, api_id: str, dep: Mapping[str, Any]) -> list[str]:
        """Where a ready replica should answer now: the ready pods, or the Service once one is ready."""
        if self.by_pods(api_id):
            return [ep.url for ep in self.endpoints.ready(api_id)]
        return [self.url_for(api_id, dep["metadata"]["name"])] if ready_replicas(dep) >= 1 else []

    async def _answers_ready(self, url: str) -> bool:
        try:
            return (await self._http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        model = self._models.get(api_id)
        entry = model.entry if model else None
        _, unloaded = load_target(entry) if entry else (1, 0)
        dep = await self._deployment(api_id)
        name = dep["metadata"]["name"]
        if spec_replicas(dep) != unloaded:
            log.info("scaling %s down to %d", name, unloaded, extra={"model": api_id})
            await self._scale(name, unloaded)
        self._board.publish(api_id, desired=unloaded, members=[])
        # The runtime drains its own requests on SIGTERM; wait until its pods are gone (not only no longer
        # counted: a terminating pod still holds its GPU), as long as the kubelet may take to kill them.
        deadline = time.monotonic() + stop_bound(dep, grace_seconds)
        while True:
            left = await pods_left(self.api, dep, unloaded)
            if left is None:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "model %s: pod %s still there after scaling %s down to %d; giving up waiting",
                    api_id, left, name, unloaded, extra={"model": api_id},
                )  # fmt: skip
                return
            await asyncio.sleep(self.settings.poll_interval)

    async def end_unresponsive(self, api_id: str, replica_id: str) -> None:
        """Leave the pod to its liveness probe (the kubelet restarts the container): the router may not
        delete pods, and scaling to zero would unload a model other replicas may still be serving."""
        log.warning(
            "model %s: runtime %s unresponsive; leaving its pod to the liveness probe",
            api_id,
            replica_id,
            extra={"model": api_id, "replica": replica_id},
        )

    async def observe(self, api_id: str) -> BackendObservation:
        try:
            dep = await self._deployment(api_id)
        except BackendLoadError as exc:
            return BackendObservation(running=False, ready=False, failed=True, message=str(exc))
        running = spec_replicas(dep) > 0
        problem = deployment_problem(dep)
        if self.by_pods(api_id):
            ready = running and bool(self.endpoints.ready(api_id))
        else:
            ready = running and ready_replicas(dep) > 0
        self._publish(api_id, dep, ready)
        return BackendObservation(
            running=running,
            ready=ready,
            failed=problem is not None,
            message=problem,
            last_used=last_used_from(dep, self.settings.last_used_interval),
        )

    async def close(self) -> None:
        # Deployments outlive the router: never scale them down here. Its leases go (another router leads).
        await self.endpoints.close()
        await self.deployments.close()
        if self.api.started:
            try:
                # Best effort, and short: an unreleased lease only expires later (another router waits longer).
                await asyncio.wait_for(self.lease.release(), min(2.0, self.settings.lease_duration))
            except Exception as exc:
                log.warning("cannot release the scaling lease: %s", exc)
        await self._http.aclose()
        await self.api.close()

    # -- shared idle bookkeeping -----------------------------------------------------------------

    async def note_used(self, api_id: str, force: bool = False) -> None:
        """Record a use on the Deployment (throttled), for every router replica to see."""
        model = self._models.setdefault(api_id, _Model())
        now = time.monotonic()
        if not force and now - model.last_written < self.settings.last_used_interval:
            return
        before, model.last_written = model.last_written, now
        value = now_iso() if not self.settings.pod_name else f"{now_iso()} {self.settings.pod_name}"
        try:
            await self._annotate(await self.deployments.name(api_id), {ANNOTATION_LAST_USED: value})
        except BaseException:
            model.last_written = before  # not written: the next use tries again
            raise

    async def cluster_last_used(self, api_id: str) -> float | None:
        """Wall-clock time of the last use any router replica recorded (None when never)."""
        dep = await self._deployment(api_id)
        value = ((dep.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_USED, "")
        return parse_iso(value.split(" ")[0] if value else None)


def build_kube_backend(settings: RouterSettings) -> KubeBackend:
    """The backend for ``MODELPLEX_ROUTER_BACKEND=kubernetes`` (settings from MODELPLEX_ROUTER_KUBE_*)."""
    del settings  # the router's own settings carry nothing Kubernetes-specific
    return KubeBackend(KubeBackendSettings())


def cluster_catalog_source(
    backend: ModelBackend, settings: RouterSettings
) -> Callable[[], Awaitable[ModelplexConfig]]:
    """What the router re-reads while serving: the served MultiModels, through its own backend."""
    if not isinstance(backend, KubeBackend):
        raise TypeError(f"the cluster's models are read through a KubeBackend, not {type(backend).__name__}")
    return functools.partial(backend.load_config, settings.default_model_id)


def load_cluster_config(settings: RouterSettings) -> ModelplexConfig:
    """The models of the served MultiModel(s), read once at start (before the router's loop runs)."""

    async def read() -> ModelplexConfig:
        backend = KubeBackend(KubeBackendSettings())
        try:
            return await backend.load_config(settings.default_model_id)
        finally:
            await backend.close()

    return asyncio.run(read())
