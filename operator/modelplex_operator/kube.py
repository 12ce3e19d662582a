"""The one module that talks to the Kubernetes API for the operator (reads and writes, raw dicts)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from modelplex_operator.crd import GROUP, PLURAL, VERSION
from modelplex_operator.naming import LABEL_MANAGED_BY, LABEL_MULTIMODEL, MANAGED_BY
from modelplex_operator.plan import Action

FIELD_MANAGER = "modelplex-operator"


class ApplyRejected(Exception):
    """The API server refused an object as invalid (4xx): retrying the same spec cannot help."""


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


async def make_api_client(kube_api_url: str | None) -> client.ApiClient:
    """In-cluster credentials, else the kubeconfig; or a plain URL (tests, `kubectl proxy`)."""
    cfg = client.Configuration()
    if kube_api_url:
        cfg.host = kube_api_url.rstrip("/")
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


async def _json(resp: Any) -> Any:
    return json.loads(await resp.read())


def _owned_by(obj: dict[str, Any], multimodel: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(LABEL_MULTIMODEL) == multimodel and labels.get(LABEL_MANAGED_BY) == MANAGED_BY


class KubeWriter:
    """Reads the objects a MultiModel owns and applies planned actions to them."""

    def __init__(self, api: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def owned(self, namespace: str, multimodel: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        selector = f"{LABEL_MULTIMODEL}={multimodel},{LABEL_MANAGED_BY}={MANAGED_BY}"
        deps = await _json(await self.apps.list_namespaced_deployment(
            namespace, label_selector=selector, _preload_content=False))
        svcs = await _json(await self.core.list_namespaced_service(
            namespace, label_selector=selector, _preload_content=False))
        # Filtered here too: the selector is the server's job, but a wrong answer must not delete anything.
        return (
            {d["metadata"]["name"]: d for d in deps.get("items", []) if _owned_by(d, multimodel)},
            {s["metadata"]["name"]: s for s in svcs.get("items", []) if _owned_by(s, multimodel)},
        )

    async def pods_of(self, namespace: str, deployment: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        """The Deployment's pods, only asked for while it has no ready replica (why is it stuck?)."""
        match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not match:
            return ()
        selector = ",".join(f"{k}={v}" for k, v in match.items())
        try:
            data = await _json(await self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False))
        except ApiException as exc:
            if exc.status in (403, 404):  # without that permission, status just says "loading"
                return ()
            raise
        return tuple(p for p in data.get("items", [])
                     if match.items() <= ((p.get("metadata") or {}).get("labels") or {}).items())

    async def get_multimodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await _json(await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, namespace: str, action: Action) -> None:
        try:
            await self._apply(namespace, action)
        except ApiException as exc:
            # Idempotent: another reconcile (or a restart mid-way) may have done this already.
            if (action.verb == "create" and exc.status == 409) or (action.verb == "delete" and exc.status == 404):
                return
            # Invalid objects (a toleration or affinity the schema cannot check): report, do not retry-loop.
            if exc.status in (400, 422):
                raise ApplyRejected(f"{action.verb} {action.kind} {action.name}: {_api_message(exc)}") from exc
            raise

    async def _apply(self, namespace: str, action: Action) -> None:
        name = action.name
        if action.kind == "Deployment":
            if action.verb == "create":
                await self.apps.create_namespaced_deployment(namespace, action.body, field_manager=FIELD_MANAGER)
            elif action.verb == "update":
                # Server-side apply without spec.replicas: the operator never owns the count after creation.
                await self.apps.patch_namespaced_deployment(
                    name, namespace, action.body, field_manager=FIELD_MANAGER, force=True,
                    _content_type="application/apply-patch+yaml")
            else:
                await self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        else:
            if action.verb == "create":
                await self.core.create_namespaced_service(namespace, action.body, field_manager=FIELD_MANAGER)
            elif action.verb == "update":
                await self.core.patch_namespaced_service(
                    name, namespace, action.body, field_manager=FIELD_MANAGER, force=True,
                    _content_type="application/apply-patch+yaml")
            else:
                await self.core.delete_namespaced_service(name, namespace)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status},
                _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise
