"""The router's Kubernetes API calls, as raw JSON (the typed models drop fields they do not know).

One ``KubeApi`` per backend: it makes the client on first use (in-cluster credentials, the kubeconfig,
or a plain URL), and offers exactly the calls the router makes (the chart's Role grants exactly these:
``tests/packaging/test_rbac_from_code.py`` reads them from this file).
"""

from __future__ import annotations

from typing import Any

from modelplex_router.kube_lease import lease_request
from modelplex_router.kube_objects import GROUP, PLURAL, VERSION
from modelplex_router.kube_watch import raw_json

USER_AGENT = "modelplex-router"
REQUEST_TIMEOUT = 10.0  # seconds, for each single request (a watch has its own bounds)


class KubeApi:
    def __init__(self, namespace: str, api_url: str | None, api: Any | None = None) -> None:
        self.namespace = namespace
        self._api_url = api_url
        self._api = api
        self._owns_api = api is None

    @property
    def started(self) -> bool:
        return self._api is not None

    async def client(self) -> Any:
        if self._api is None:
            self._api = await make_api_client(self._api_url)
        return self._api

    async def _apps(self) -> Any:
        from kubernetes_asyncio import client

        return client.AppsV1Api(await self.client())

    # -- Deployments ------------------------------------------------------------------------------

    # The backend reads Deployments from its watch (``deployment_lister``); these two are its fallback
    # before the watch has listed, or while it fails (bounded: REQUEST_TIMEOUT).

    async def read_deployment(self, name: str) -> dict[str, Any]:
        apps = await self._apps()
        return await raw_json(
            await apps.read_namespaced_deployment(
                name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    async def list_deployments(self, selector: str) -> list[dict[str, Any]]:
        apps = await self._apps()
        data = await raw_json(
            await apps.list_namespaced_deployment(
                self.namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        return list(data.get("items", []))

    async def deployment_lister(self) -> Any:
        """``list_namespaced_deployment`` (for ``kube_watch.ListWatch``: it lists and watches with it)."""
        apps = await self._apps()
        return apps.list_namespaced_deployment

    # The writes answer the Deployment's resourceVersion after them (None when the server sent none), so
    # the backend knows when its watch has caught up with them (kube_deployments.py).

    async def patch_deployment(self, name: str, body: dict[str, Any]) -> str | None:
        apps = await self._apps()
        return _resource_version(
            await raw_json(
                await apps.patch_namespaced_deployment(
                    name, self.namespace, body, _content_type="application/merge-patch+json", _preload_content=False
                )
            )
        )

    async def scale_deployment(self, name: str, replicas: int) -> str | None:
        apps = await self._apps()
        # An absolute count through the scale subresource: idempotent across router replicas.
        return _resource_version(
            await raw_json(
                await apps.patch_namespaced_deployment_scale(
                    name,
                    self.namespace,
                    {"spec": {"replicas": replicas}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            )
        )

    # -- Pods, EndpointSlices, MultiModels, Leases ------------------------------------------------

    async def list_pods(self, selector: str) -> list[dict[str, Any]]:
        from kubernetes_asyncio import client

        core = client.CoreV1Api(await self.client())
        data = await raw_json(
            await core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False)
        )
        return list(data.get("items", []))

    async def endpoint_slice_lister(self) -> Any:
        """``list_namespaced_endpoint_slice`` (for ``kube_watch.ListWatch``: it lists and watches with it)."""
        from kubernetes_asyncio import client

        discovery = client.DiscoveryV1Api(await self.client())
        # list_namespaced_endpoint_slice(...) and, with watch=True, the same call streams its changes.
        return discovery.list_namespaced_endpoint_slice

    async def multimodels(self, name: str) -> list[dict[str, Any]]:
        """The MultiModel ``name``, or every one in the namespace when ``name`` is empty."""
        from kubernetes_asyncio import client

        custom = client.CustomObjectsApi(await self.client())
        ns = self.namespace
        if name:
            return [
                await raw_json(
                    await custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
                )
            ]
        data = await raw_json(
            await custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _preload_content=False)
        )
        return list(data.get("items", []))

    async def lease(self, group: str, verb: str, name: str, body: Any) -> Any:
        from kubernetes_asyncio import client

        api = client.CoordinationV1Api(await self.client())
        return await raw_json(await lease_request(api, self.namespace, group, verb, name, body))

    async def close(self) -> None:
        if self._owns_api and self._api is not None:
            await self._api.close()


def _resource_version(obj: Any) -> str | None:
    version = ((obj.get("metadata") or {}) if isinstance(obj, dict) else {}).get("resourceVersion")
    return version if isinstance(version, str) else None


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
    api = client.ApiClient(configuration=cfg)
    api.user_agent = USER_AGENT  # the API server's audit log (and the tests) can tell the router's requests
    return api
