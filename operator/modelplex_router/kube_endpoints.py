"""Each model's pods from its Service's EndpointSlices, published as the model's replicas.

One watch per router (``kube_watch.ListWatch``) over every EndpointSlice in the namespace that belongs
to a Service (label ``kubernetes.io/service-name``): one connection however many models there are
(the API client's pool holds 100). The slices are grouped by that label; for each Service a model
follows (the operator names it like the model's Deployment), the pods it lists (``endpoint_slices``)
become the model's replicas on the ``ReplicaBoard``: one ``Replica`` per pod, id = the pod's name,
url = ``http://<pod address>:<runtime port>``, ready while its endpoint is ready and not terminating.
The replica pool then routes per request over the ready ones and drains a pod that stopped being
ready or left the slice (``replica_pool.py``). Pods joining or leaving a model's ready set are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from modelplex_router.backend import Replica
from modelplex_router.endpoint_slices import (
    LABEL_SERVICE_NAME,
    PodEndpoint,
    endpoint_changes,
    pod_endpoints,
    service_of,
)
from modelplex_router.kube_objects import RUNTIME_PORT, RUNTIME_PORT_NAME
from modelplex_router.kube_watch import ListWatch
from modelplex_router.replica_board import ReplicaBoard

log = logging.getLogger("modelplex_router.kube")


class EndpointWatch:
    def __init__(
        self,
        board: ReplicaBoard,
        lister: Callable[[], Awaitable[Any]],
        namespace: str,
        resync_seconds: float,
    ) -> None:
        self._board = board
        self._lister = lister
        self._namespace = namespace
        self._resync = resync_seconds
        self._models: dict[str, str] = {}  # api id -> Service
        self._endpoints: dict[str, list[PodEndpoint]] = {}  # api id -> its pods as last published
        self._by_service: dict[str, list[dict[str, Any]]] = {}
        self._watch: ListWatch | None = None

    async def start(self) -> None:
        """Start the watch (once; later calls return at once)."""
        if self._watch is not None:
            return
        list_call = await self._lister()
        if self._watch is not None:  # started meanwhile
            return
        self._watch = ListWatch(
            "EndpointSlices", list_call, self._namespace, LABEL_SERVICE_NAME, self._changed,
            resync_seconds=self._resync,
        )  # fmt: skip
        self._watch.start()

    def follow(self, api_id: str, service: str) -> None:
        """Publish ``service``'s pods as ``api_id``'s replicas from now on."""
        if self._models.get(api_id) != service:
            self._models[api_id] = service
            self._endpoints.pop(api_id, None)
            self._publish(api_id)

    @property
    def synced(self) -> bool:
        return self._watch is not None and self._watch.synced.is_set()

    @property
    def problem(self) -> str | None:
        """Why the watch fails now (None while it works)."""
        return None if self._watch is None else self._watch.problem

    def waiting_for(self, service: str) -> str:
        """Why no pod of ``service`` is ready yet, for a load's error."""
        watch = f" (the EndpointSlice watch fails: {self.problem})" if self.problem else ""
        return f"no ready pod in the EndpointSlices of service {service} yet{watch}"

    def ready(self, api_id: str) -> list[PodEndpoint]:
        return [ep for ep in self._endpoints.get(api_id, []) if ep.ready]

    def _changed(self, slices: Mapping[str, dict[str, Any]]) -> None:
        by_service: dict[str, list[dict[str, Any]]] = {}
        for endpoint_slice in slices.values():
            if (service := service_of(endpoint_slice)) is not None:
                by_service.setdefault(service, []).append(endpoint_slice)
        self._by_service = by_service
        for api_id in self._models:
            self._publish(api_id)

    def _publish(self, api_id: str) -> None:
        now = pod_endpoints(self._by_service.get(self._models[api_id], []), RUNTIME_PORT_NAME, RUNTIME_PORT)
        before = self._endpoints.get(api_id, [])
        if now == before and api_id in self._endpoints:
            return
        self._endpoints[api_id] = now
        joined, left = endpoint_changes(before, now)
        for ep in joined:
            log.info(
                "model %s: pod %s joined its endpoints (%s)", api_id, ep.pod, ep.url,
                extra={"model": api_id, "replica": ep.pod, "url": ep.url, "change": "joined"},
            )  # fmt: skip
        for ep in left:
            log.info(
                "model %s: pod %s left its endpoints (%s)", api_id, ep.pod, ep.url,
                extra={"model": api_id, "replica": ep.pod, "url": ep.url, "change": "left"},
            )  # fmt: skip
        self._board.publish(api_id, members=[Replica(ep.pod, ep.url, ep.ready) for ep in now])

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
