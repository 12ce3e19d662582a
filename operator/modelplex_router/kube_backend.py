"""The Kubernetes backend: each model's runtime is a Deployment + Service the operator created.

* Discovery: the models come from MultiModel resources (one by name, or every one in a namespace);
  each model's Deployment is found by the labels and ``modelplex.dev/api-id`` annotation the operator
  puts on it, so the router never re-derives the operator's naming.
* Load = scale the Deployment (scale subresource) to ``maxReplicas`` unless it has at least that
  many; unload = scale it to ``minReplicas`` (normally 0). Both are absolute writes, so several router
  replicas doing the same thing at once converge to the same count.
* Ready = the Deployment reports a ready replica and the model's URL answers ``/ready`` with 200.
* URL = the model's Service DNS name, or an override per API id (tests point it at a local runtime).
* Last use is written (throttled) as the ``modelplex.dev/last-used`` annotation on the Deployment, so
  every router replica can tell when *any* replica last used a model.

Only ``kubernetes_asyncio`` and ``httpx`` are used; the router never imports kopf or the operator.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelplex_router.backend import BackendLoadError, BackendObservation, ModelBackend
from modelplex_router.settings import RouterSettings
from modelplex_spec import KubernetesSettings, ModelEntry, ModelplexConfig
from modelplex_spec.config import parse_entries

log = logging.getLogger("modelplex_router.kube")

# The operator's contract (modelplex_operator.naming; a test checks they agree).
GROUP = "modelplex.dev"
VERSION = "v1alpha1"
PLURAL = "multimodels"
LABEL_MULTIMODEL = f"{GROUP}/multimodel"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelplex-operator"
ANNOTATION_API_ID = f"{GROUP}/api-id"
ANNOTATION_LAST_USED = f"{GROUP}/last-used"
RUNTIME_PORT = 8000

# Container states that will not fix themselves: fail the load with the reason instead of waiting.
_FATAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


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
    pod_name: str = Field(default="", description="This router's pod, recorded with the last use.")


# -- pure helpers ----------------------------------------------------------------------------------


def now_iso() -> str:
    # Milliseconds: idle timeouts can be short, and the readers allow only for the write throttle.
    return datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def config_from_multimodels(
    objects: list[Mapping[str, Any]], default_model_id: str | None = None
) -> tuple[ModelplexConfig, dict[str, str]]:
    """Every model of the given MultiModels as one config, and API id -> owning MultiModel name.

    API ids must be unique across the MultiModels one router serves; ConfigError lists clashes.
    """
    pairs: list[tuple[str, Any]] = []
    owners: list[str] = []
    first_default: str | None = None
    for obj in sorted(objects, key=lambda o: o["metadata"]["name"]):
        spec = obj.get("spec") or {}
        first_default = first_default or spec.get("defaultModelId")
        for label, entry in (spec.get("models") or {}).items():
            raw = {k: v for k, v in entry.items() if v is not None} if isinstance(entry, Mapping) else entry
            pairs.append((f"{obj['metadata']['name']}/{label}", raw))
            owners.append(obj["metadata"]["name"])
    config = parse_entries(pairs, default_model_id or first_default)
    return config, {m.entry.api_id: owner for m, owner in zip(config.models, owners, strict=True)}


def last_used_from(dep: Mapping[str, Any], write_interval: float) -> float | None:
    """The latest time any router replica may have used the model, from the last-used annotation.

    Writers record a use at most every ``write_interval`` seconds, so a use may have happened up to that
    long after the recorded time without being written: count it as that late, or a replica would unload
    a model that another one keeps serving at a steady rate.
    """
    value = ((dep.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_USED, "")
    written = parse_iso(value.split(" ")[0] if value else None)
    return None if written is None else written + write_interval


def load_target(entry: ModelEntry) -> tuple[int, int]:
    """(replicas when loaded, replicas when unloaded) for an entry."""
    k8s = entry.kubernetes or KubernetesSettings()
    return max(k8s.maxReplicas, 1), k8s.minReplicas


def pod_problem(pods: list[Mapping[str, Any]]) -> str | None:
    """A one-line reason when a model's pods cannot become ready without someone's help."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _FATAL_WAITING:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                detail = waiting.get("message") or last.get("message") or last.get("reason") or ""
                return f"pod {pod['metadata']['name']}: {waiting['reason']}" + (
                    f": {detail}" if detail else ""
                )
    return None


def deployment_problem(dep: Mapping[str, Any]) -> str | None:
    for cond in (dep.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            return f"deployment {dep['metadata']['name']}: {cond.get('message') or cond.get('reason')}"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"deployment {dep['metadata']['name']}: {cond.get('message') or cond.get('reason')}"
    return None


def ready_replicas(dep: Mapping[str, Any]) -> int:
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def spec_replicas(dep: Mapping[str, Any]) -> int:
    return int((dep.get("spec") or {}).get("replicas", 1) or 0)


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

    # -- clients (raw JSON: the typed models drop fields they do not know) ------------------------

    async def _apis(self) -> Any:
        if self._api is None:
            self._api = await make_api_client(self.settings.api_url)
        from kubernetes_asyncio import client

        return client.AppsV1Api(self._api), client.CoreV1Api(self._api), client.CustomObjectsApi(self._api)

    @staticmethod
    async def _json(resp: Any) -> Any:
        return json.loads(await resp.read())

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
        await apps.patch_namespaced_deployment(
            name,
            self.settings.namespace,
            body,
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )

    async def _scale(self, name: str, replicas: int) -> None:
        apps, _, _ = await self._apis()
        # An absolute count through the scale subresource: idempotent across router replicas.
        await apps.patch_namespaced_deployment_scale(
            name,
            self.settings.namespace,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
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
        await self.note_used(api_id, force=True)

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> str:
        deadline = time.monotonic() + timeout_seconds
        last_reason = "no ready replica yet"
        while True:
            dep = await self._deployment(api_id)
            name = dep["metadata"]["name"]
            problem = deployment_problem(dep)
            if problem:
                raise BackendLoadError(problem)
            if spec_replicas(dep) == 0:
                raise BackendLoadError(f"deployment {name} was scaled to zero while the model was loading")
            if ready_replicas(dep) >= 1:
                url = self.url_for(api_id, name)
                if await self._answers_ready(url):
                    return url
                last_reason = f"{url}/ready does not answer 200 yet"
            else:
                problem = await self._pod_problem(dep)
                if problem:
                    raise BackendLoadError(problem)
            if time.monotonic() >= deadline:
                raise BackendLoadError(
                    f"model {api_id!r} not ready after {timeout_seconds:.0f}s: {last_reason}"
                )
            await asyncio.sleep(self.settings.poll_interval)

    async def _answers_ready(self, url: str) -> bool:
        try:
            return (await self._http.get(f"{url}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _pod_problem(self, dep: Mapping[str, Any]) -> str | None:
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
        items = [
            p
            for p in pods.get("items", [])
            if match.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()
        ]
        return pod_problem(items)

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        model = self._models.get(api_id)
        entry = model.entry if model else None
        _, unloaded = load_target(entry) if entry else (1, 0)
        dep = await self._deployment(api_id)
        name = dep["metadata"]["name"]
        if spec_replicas(dep) != unloaded:
            log.info("scaling %s down to %d", name, unloaded, extra={"model": api_id})
            await self._scale(name, unloaded)
        # The runtime drains its own requests on SIGTERM; wait for the pods to go so the GPU is free.
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            dep = await self._deployment(api_id)
            if int((dep.get("status") or {}).get("replicas") or 0) <= unloaded:
                return
            await asyncio.sleep(self.settings.poll_interval)

    async def observe(self, api_id: str) -> BackendObservation:
        try:
            dep = await self._deployment(api_id)
        except BackendLoadError as exc:
            return BackendObservation(running=False, ready=False, failed=True, message=str(exc))
        name = dep["metadata"]["name"]
        running = spec_replicas(dep) > 0
        problem = deployment_problem(dep)
        return BackendObservation(
            running=running,
            ready=running and ready_replicas(dep) > 0,
            failed=problem is not None,
            message=problem,
            url=self.url_for(api_id, name) if running else None,
            last_used=last_used_from(dep, self.settings.last_used_interval),
        )

    async def close(self) -> None:
        # Deployments outlive the router: never scale them down here.
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
