"""The models' Deployments from one watch, so that the router's ticks read a cache instead of the API.

One namespace-wide ``kube_watch.ListWatch`` over the Deployments the operator manages (its labels, and
the MultiModel's when the router serves one: ``kube_objects.deployment_selector``), keyed by model
through the ``modelplex.dev/api-id`` annotation: ``observe``, ``wait_ready``, ``stop``, ``scale`` and the
idle bookkeeping read a model's Deployment from it without a request, and a Deployment deleted and
recreated under another name is found again from the events themselves. The router's own writes are
laid over the cached object until the watch shows them (``deployment_writes.py``), so an event still in
flight from before a scale cannot undo it; one not shown within ``overlay_seconds`` makes the watch
list again.

The fallback: until the first list has arrived, or while the watch fails, a model's Deployment is read
with a GET as before (its name found by a LIST of the operator's Deployments, once, and again when the
GET answers 404: renamed or recreated). So is a model the watch knows no Deployment of (just created,
the event not here yet). Every request has a bound (``kube_api.REQUEST_TIMEOUT``). The first fallback
for each reason is logged, and so is the watch serving again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelplex_router.backend import BackendLoadError
from modelplex_router.deployment_writes import Write, overdue, with_writes
from modelplex_router.kube_api import KubeApi
from modelplex_router.kube_objects import by_api_id, deployment_selector
from modelplex_router.kube_watch import ListWatch

log = logging.getLogger("modelplex_router.kube")


class Deployments:
    def __init__(
        self,
        api: KubeApi,
        multimodel: str,
        resync_seconds: float,
        *,
        on_found: Callable[[str, str], None] = lambda api_id, name: None,
        overlay_seconds: float = 10.0,
    ) -> None:
        self._api = api
        self._multimodel = multimodel
        self._resync = resync_seconds
        self._on_found = on_found  # (api id, Deployment name), on every lookup
        self._bound = overlay_seconds
        self._watched: dict[str, str] = {}  # api id -> Deployment, by the watch
        self._last_seen: dict[str, str] = {}  # api id -> the Deployment the watch showed last (kept when it goes)
        self._looked_up: dict[str, str] = {}  # api id -> Deployment, by the fallback's LIST
        self._writes: dict[str, list[Write]] = {}  # Deployment -> the router's writes the watch has not shown
        self._changed = asyncio.Event()
        self.version = 0
        """Taken anew on every change of a watched Deployment and every write of the router's."""
        self._fallback: str | None = None  # why the last read was a GET (None: from the watch)
        self._watch: ListWatch | None = None

    async def start(self) -> None:
        """Start the watch (once; later calls return at once)."""
        if self._watch is not None:
            return
        list_call = await self._api.deployment_lister()
        if self._watch is not None:  # started meanwhile
            return
        self._watch = ListWatch("Deployments", list_call, self._api.namespace, deployment_selector(self._multimodel),
                                self._on_change, resync_seconds=self._resync)  # fmt: skip
        self._watch.start()

    @property
    def serving(self) -> bool:
        """The cache is the server's view: listed at least once, and the watch works now."""
        return self._watch is not None and self._watch.synced.is_set() and self._watch.problem is None

    def _why_not_serving(self) -> str:
        if self._watch is not None and self._watch.problem is not None:
            return f"the Deployment watch fails ({self._watch.problem})"
        return "the Deployment watch has not listed yet"

    # -- reads --------------------------------------------------------------------------------------

    async def get(self, api_id: str) -> dict[str, Any]:
        """The model's Deployment as the router last knows it (BackendLoadError when it has none)."""
        await self.start()
        name = self._watched.get(api_id) if self.serving else None
        if name is not None and self._watch is not None and name in self._watch.objects:
            self._served_again()
            self._on_found(api_id, name)
            return self._overlaid(name, self._watch.objects[name], self._watch.listed_at)
        if self.serving:  # just created, its event not here yet; or it has none (the LIST says)
            log.debug("model %s: the Deployment watch lists none; looking it up", api_id, extra={"model": api_id})
        else:
            self._falling_back(api_id, self._why_not_serving())
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await self._read(await self.name(api_id))
        except ApiException as exc:
            if exc.status != 404:
                raise
        # Renamed or recreated: look it up again once.
        return await self._read(await self.name(api_id, refresh=True))

    async def _read(self, name: str) -> dict[str, Any]:
        sent = time.monotonic()
        return self._overlaid(name, await self._api.read_deployment(name), sent)

    async def name(self, api_id: str, refresh: bool = False) -> str:
        """The name of the model's Deployment (BackendLoadError when it has none)."""
        name = self._watched.get(api_id) if self.serving and not refresh else None
        name = name or (None if refresh else self._looked_up.get(api_id)) or await self._list_for(api_id)
        self._on_found(api_id, name)
        return name

    async def _list_for(self, api_id: str) -> str:
        items = await self._api.list_deployments(deployment_selector(self._multimodel))
        self._looked_up = by_api_id({(d.get("metadata") or {}).get("name", ""): d for d in items}, self._multimodel)
        if api_id in self._looked_up:
            return self._looked_up[api_id]
        raise BackendLoadError(
            f"no Deployment for model {api_id!r} in namespace {self._api.namespace!r} yet; "
            "is the modelplex operator running?"
        )

    def _overlaid(self, name: str, dep: Mapping[str, Any], read_since: float | None) -> dict[str, Any]:
        out, kept = with_writes(dep, self._writes.get(name, []), read_since)
        self._writes[name] = kept
        if self._watch is not None and overdue(kept, time.monotonic(), self._bound):
            self._watch.resync_now()  # a fresh list settles them
        return out

    def _falling_back(self, api_id: str, reason: str) -> None:
        if reason != self._fallback:
            log.info("model %s: reading its Deployment with a GET: %s", api_id, reason, extra={"model": api_id})
        self._fallback = reason

    def _served_again(self) -> None:
        if self._fallback is not None:
            log.info("the Deployment watch serves the Deployments again (no GETs)")
        self._fallback = None

    # -- the router's writes and the changes --------------------------------------------------------

    def wrote(self, name: str, patch: Mapping[str, Any], resource_version: str | None) -> None:
        """The router made this merge patch on Deployment ``name``: keep it until the watch shows it."""
        self._writes.setdefault(name, []).append(Write(patch, resource_version, time.monotonic()))
        self._notify()

    async def changed(self, version: int, timeout_seconds: float) -> None:
        """Until ``version`` is past (a Deployment changed, or the router wrote one), or the timeout passes."""
        if self.version > version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.0, timeout_seconds))

    def _on_change(self, objects: Mapping[str, dict[str, Any]]) -> None:
        names = by_api_id(objects, self._multimodel)
        for api_id, name in names.items():
            if self._last_seen.get(api_id) not in (None, name):
                log.info("model %s: its Deployment is now %s", api_id, name, extra={"model": api_id})
            self._last_seen[api_id] = name
        self._watched = names
        self._writes = {name: writes for name, writes in self._writes.items() if name in objects}
        self._notify()

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
