"""The Kubernetes backend: each model's runtime is a Deployment + Service the operator created.

* Discovery: the models come from MultiModel resources (one by name, or every one in a namespace);
  each model's Deployment is found by the labels and ``modelplex.dev/api-id`` annotation the operator
  puts on it, so the router never re-derives the operator's naming.
* Load = scale the Deployment (scale subresource) to ``maxReplicas`` unless it has at least that
  many; unload = scale it to ``minReplicas`` (normally 0). Both are absolute writes, so several router
  replicas doing the same thing at once converge to the same count.
* Ready = the Deployment reports a ready replica and the model's URL answers its engine's readiness
  path with 200 (``/ready`` for the modelplex runtime, ``/health`` for vLLM).
* URL = the model's Service DNS name, or an override per API id (tests point it at a local runtime).
* Last use is written (throttled) as the ``modelplex.dev/last-used`` annotation on the Deployment, so
  every router replica can tell when *any* replica last used a model.

Only ``kubernetes_asyncio`` and ``httpx`` are used; the router never imports kopf or the operator.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelplex_router.backend import BackendLoadError, BackendObservation, ModelBackend, Replica, Replicas
from modelplex_router.kube_lease import ScalingLease, lease_request
from modelplex_router.kube_objects import (
    ANNOTATION_API_ID,
    ANNOTATION_LAST_SCALING,
    ANNOTATION_LAST_USED,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_MULTIMODEL,
    MANAGED_BY,
    PLURAL,
    RUNTIME_PORT,
    VERSION,
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
from modelplex_router.replica_board import ReplicaBoard
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelEntry, ModelplexConfig
from modelplex_spec.engines import TRANSFORMERS, Engine, engine_for
from modelplex_spec.pod_status import pod_problem

log = logging.getLogger("modelplex_router.kube")


class KubeBackendSettings(BaseSettings):
    """MODELPLEX_ROUTER_KUBE_* (the chart sets them)."""

    model_config = SettingsConfigDict(env_prefix="MODELPLEX_ROUTER_KUBE_", extra="ignore")

    namespace: str = Field(default="default", description="Namespace of the MultiModels served.")
    multimodel: str = Field(
        default="", description="Serve this MultiModel only; empty = all in the namespace."
    )
    api_url: str | None = Field(
        default=None, description="Plain API URL (tests, kubectl proxy); else in-cluster."
    )
    service_urls: dict[str, str] = Field(
        default_factory=dict, description="API id -> base URL, overriding the Service DNS name (JSON)."
    )
    poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between readiness checks while loading."
    )
    last_used_interval: float = Field(
        default=30.0, ge=0, description="Write the last-used annotation at most this often per model."
    )
    pod_name: str = Field(
        default="", description="This router's pod, recorded with the last use and as its lease holder identity."
    )
    lease_duration: float = Field(
        default=10.0, gt=0, description="Seconds the scaling lease and a router's load report stay valid unrenewed."
    )
    lease_renew_interval: float = Field(
        default=2.0, gt=0, description="Seconds between renewals of the scaling lease and load reports."
    )


@dataclass
class _Model:
    deployment: str
    entry: ModelEntry | None = None
    last_written: float = 0.0


# -- the backend -------------------------------------------------------------------------------------


class KubeBackend:
    """ModelBackend over Deployments (see the module docstring and modelplex_router.backend)."""

    def __init__(
        self, settings: KubeBackendSettings, api: Any | None = None, http: httpx.AsyncClient | None = None
    ):
        self.settings = settings
        self._api = api
        self._owns_api = api is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        self._models: dict[str, _Model] = {}
        self._lock = asyncio.Lock()
        self._board = ReplicaBoard()
        self.lease = ScalingLease(
            self._lease_call,
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

    async def _lease_call(self, verb: str, name: str, body: Any) -> Any:
        from kubernetes_asyncio import client

        api = client.CoordinationV1Api((await self._apis())[0].api_client)
        return await self._json(await lease_request(api, self.settings.namespace, self.lease.group, verb, name, body))

    # -- replicas ---------------------------------------------------------------------------------

    def replicas(self, api_id: str) -> Replicas:
        return self._board.get(api_id)

    async def replicas_changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        return await self._board.changed(api_id, version, timeout_seconds)

    def _publish(self, api_id: str, dep: Mapping[str, Any], ready: bool) -> Replicas:
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
            await self._patch_deployment(name, {"metadata": {"annotations": {ANNOTATION_LAST_SCALING: record}}})
        except Exception as exc:
            log.warning("model %s: cannot record the scaling decision: %s", api_id, exc, extra={"model": api_id})

    # -- clients (raw JSON: the typed models drop fields they do not know) ------------------------

    async def _apis(self) -> Any:
        if self._api is None:
            self._api = await make_api_client(self.settings.api_url)
        from kubernetes_asyncio import client

        return client.AppsV1Api(self._api), client.CoreV1Api(self._api), client.CustomObjectsApi(self._api)

    @staticmethod
    async def _json(resp: Any) -> Any:
        """The body of a raw (``_preload_content=False``) response; ApiException for a non-2xx status,
        which the client does not raise itself for raw responses."""
        body = await resp.read()
        if not 200 <= resp.status <= 299:
            from kubernetes_asyncio.client.exceptions import ApiException

            exc = ApiException(status=resp.status, reason=resp.reason)
            exc.body = body.decode("utf-8", "replace")
            raise exc
        return json.loads(body) if body else {}

    async def _read_deployment(self, name: str) -> dict[str, Any]:
        apps, _, _ = await self._apis()
        return await self._json(
            await apps.read_namespaced_deployment(name, self.settings.namespace, _preload_content=False)
        )

    async def _list_deployments(self, selector: str) -> list[dict[str, Any]]:
        apps, _, _ = await self._apis()
        data = await self._json(
            await apps.list_namespaced_deployment(
                self.settings.namespace, label_selector=selector, _preload_content=False
            )
        )
        return list(data.get("items", []))

    async def _patch_deployment(self, name: str, body: dict[str, Any]) -> None:
        apps, _, _ = await self._apis()
        await self._json(
            await apps.patch_namespaced_deployment(
                name,
                self.settings.namespace,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    async def _scale(self, name: str, replicas: int) -> None:
        apps, _, _ = await self._apis()
        # An absolute count through the scale subresource: idempotent across router replicas.
        await self._json(
            await apps.patch_namespaced_deployment_scale(
                name,
                self.settings.namespace,
                {"spec": {"replicas": replicas}},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    # -- discovery -------------------------------------------------------------------------------

    async def list_multimodels(self) -> list[dict[str, Any]]:
        _, _, custom = await self._apis()
        ns = self.settings.namespace
        if self.settings.multimodel:
            return [
                await self._json(
                    await custom.get_namespaced_custom_object(
                        GROUP, VERSION, ns, PLURAL, self.settings.multimodel, _preload_content=False
                    )
                )
            ]
        data = await self._json(
            await custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _preload_content=False)
        )
        return list(data.get("items", []))

    async def load_config(self, default_model_id: str | None = None) -> ModelplexConfig:
        config, _ = config_from_multimodels(await self.list_multimodels(), default_model_id)
        for m in config.models:
            self._models.setdefault(m.entry.api_id, _Model(deployment="")).entry = m.entry
        return config

    async def _deployment_name(self, api_id: str, refresh: bool = False) -> str:
        model = self._models.get(api_id)
        if model and model.deployment and not refresh:
            return model.deployment
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        if self.settings.multimodel:
            selector += f",{LABEL_MULTIMODEL}={self.settings.multimodel}"
        for dep in await self._list_deployments(selector):
            meta = dep.get("metadata", {})
            labels = meta.get("labels") or {}
            # Filtered here too: the label selector is the server's job, but a wrong match would scale
            # somebody else's Deployment.
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
                continue
            if self.settings.multimodel and labels.get(LABEL_MULTIMODEL) != self.settings.multimodel:
                continue
            if (meta.get("annotations") or {}).get(ANNOTATION_API_ID) == api_id:
                self._models.setdefault(api_id, _Model(deployment="")).deployment = meta["name"]
                return meta["name"]
        raise BackendLoadError(
            f"no Deployment for model {api_id!r} in namespace {self.settings.namespace!r} yet; "
            "is the modelplex operator running?"
        )

    async def _deployment(self, api_id: str) -> dict[str, Any]:
        from kubernetes_asyncio.client.exceptions import ApiException

        name = await self._deployment_name(api_id)
        try:
            return await self._read_deployment(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        # Renamed or recreated: look it up again once.
        return await self._read_deployment(await self._deployment_name(api_id, refresh=True))

    def url_for(self, api_id: str, deployment: str) -> str:
        override = self.settings.service_urls.get(api_id)
        if override:
            return override.rstrip("/")
        # The operator names the Service like the Deployment.
        return f"http://{deployment}.{self.settings.namespace}.svc:{RUNTIME_PORT}"

    # -- ModelBackend ----------------------------------------------------------------------------

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        self._models.setdefault(api_id, _Model(deployment="")).entry = entry
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
        while True:
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
            if ready_replicas(dep) >= 1:
                url = self.url_for(api_id, name)
                if await self._answers_ready(url + engine.ready_path):
                    return self._publish(api_id, dep, True)
                last_reason = f"{url}{engine.ready_path} does not answer 200 yet"
            else:
                problem = await self._pod_problem(dep, engine)
                if problem:
                    raise BackendLoadError(problem)
            if time.monotonic() >= deadline:
                raise BackendLoadError(
                    f"model {api_id!r} not ready after {timeout_seconds:.0f}s: {last_reason}"
                )
            await asyncio.sleep(self.settings.poll_interval)

    async def _answers_ready(self, url: str) -> bool:
        try:
            return (await self._http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _pod_problem(self, dep: Mapping[str, Any], engine: Engine) -> str | None:
        pods = await self._pods(dep)
        return pod_problem(pods, engine) if pods else None

    async def _pods(self, dep: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The Deployment's pods (by its selector); None when they cannot be listed."""
        match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not match:
            return None
        selector = ",".join(f"{k}={v}" for k, v in match.items())
        _, core, _ = await self._apis()
        try:
            pods = await self._json(
                await core.list_namespaced_pod(
                    self.settings.namespace, label_selector=selector, _preload_content=False
                )
            )
        except Exception as exc:  # no permission or no pods API: readiness still works without it
            log.debug("cannot list pods: %s", exc)
            return None
        return [
            p
            for p in pods.get("items", [])
            if match.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()
        ]

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
            left = await self._pods_left(dep, unloaded)
            if left is None:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "model %s: pod %s still there after scaling %s down to %d; giving up waiting",
                    api_id, left, name, unloaded, extra={"model": api_id},
                )  # fmt: skip
                return
            await asyncio.sleep(self.settings.poll_interval)

    async def _pods_left(self, dep: Mapping[str, Any], unloaded: int) -> str | None:
        """A pod beyond ``unloaded`` that still exists (terminating or not); None when there is none."""
        pods = await self._pods(dep)
        if pods is None:  # pods cannot be listed: fall back to the Deployment's own count
            dep = await self._read_deployment(dep["metadata"]["name"])
            count = int((dep.get("status") or {}).get("replicas") or 0)
            return None if count <= unloaded else f"({count} replicas)"
        return pods[unloaded]["metadata"]["name"] if len(pods) > unloaded else None

    async def end_unresponsive(self, api_id: str, replica_id: str) -> None:
        """Leave the pod to its liveness probe (the kubelet restarts the container): the router may not
        delete pods, and scaling to zero would unload a model other replicas may still be serving."""
        log.warning(
            "model %s: runtime unresponsive; leaving its pod to the liveness probe",
            api_id,
            extra={"model": api_id},
        )

    async def observe(self, api_id: str) -> BackendObservation:
        try:
            dep = await self._deployment(api_id)
        except BackendLoadError as exc:
            return BackendObservation(running=False, ready=False, failed=True, message=str(exc))
        running = spec_replicas(dep) > 0
        problem = deployment_problem(dep)
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
        if self._api is not None:
            try:
                # Best effort, and short: an unreleased lease only expires later (another router waits longer).
                await asyncio.wait_for(self.lease.release(), min(2.0, self.settings.lease_duration))
            except Exception as exc:
                log.warning("cannot release the scaling lease: %s", exc)
        await self._http.aclose()
        if self._owns_api and self._api is not None:
            await self._api.close()

    # -- shared idle bookkeeping -----------------------------------------------------------------

    async def note_used(self, api_id: str, force: bool = False) -> None:
        """Record a use on the Deployment (throttled), for every router replica to see."""
        model = self._models.setdefault(api_id, _Model(deployment=""))
        now = time.monotonic()
        if not force and now - model.last_written < self.settings.last_used_interval:
            return
        before, model.last_written = model.last_written, now
        value = now_iso() if not self.settings.pod_name else f"{now_iso()} {self.settings.pod_name}"
        try:
            name = await self._deployment_name(api_id)
            await self._patch_deployment(name, {"metadata": {"annotations": {ANNOTATION_LAST_USED: value}}})
        except BaseException:
            model.last_written = before  # not written: the next use tries again
            raise

    async def cluster_last_used(self, api_id: str) -> float | None:
        """Wall-clock time of the last use any router replica recorded (None when never)."""
        dep = await self._deployment(api_id)
        value = ((dep.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_USED, "")
        return parse_iso(value.split(" ")[0] if value else None)


def transient_api_error(exc: BaseException) -> bool:
    """An API error worth retrying: the server overloaded or failing (429, 5xx), or the connection."""
    import aiohttp
    from kubernetes_asyncio.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return exc.status == 429 or (exc.status or 0) >= 500
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


async def make_api_client(api_url: str | None) -> Any:
    """In-cluster credentials, else the kubeconfig; or a plain URL (tests, `kubectl proxy`)."""
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    if api_url:
        cfg.host = api_url.rstrip("/")
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


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
