"""The set of models behind the endpoint: the catalog, one coordinator per model, the default model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelplex_router.backend import ModelBackend
from modelplex_router.catalog import Catalog
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.errors import ModelNotFound
from modelplex_router.metrics import RouterMetrics
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelplexConfig

log = logging.getLogger("modelplex_router")


class ModelRouter:
    def __init__(
        self, config: ModelplexConfig, backend: ModelBackend, settings: RouterSettings, metrics: RouterMetrics
    ) -> None:
        self.catalog = Catalog.from_config(config)
        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.default_id = config.default_model_id
        self.created = int(time.time())
        self.coordinators = {
            api_id: ModelCoordinator(api_id, entry, backend, settings, metrics)
            for api_id, entry in self.catalog.entries.items()
        }
        self._background: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None

    def not_found(self, requested: object) -> ModelNotFound:
        ids = ", ".join(["default", *self.catalog.ids])
        return ModelNotFound(f"The model {requested!r} does not exist. Available models: {ids}")

    def resolve(self, requested: object) -> ModelCoordinator:
        """The body's ``model`` -> its coordinator; ModelNotFound (404) listing the ids otherwise."""
        api_id = self.catalog.resolve_request_model(requested, self.default_id)
        if api_id is None:
            raise self.not_found(requested)
        return self.coordinators[api_id]

    def lookup(self, model_id: object) -> ModelCoordinator | None:
        """For the management endpoints: an id, alias or ``default``; None when unknown."""
        if not isinstance(model_id, str) or not model_id:
            return None
        api_id = self.catalog.resolve_request_model(model_id, self.default_id)
        return self.coordinators.get(api_id) if api_id else None

    def set_default(self, model_id: str) -> str | None:
        coord = self.lookup(model_id)
        if coord is None:
            return None
        self.default_id = coord.api_id
        log.info("default model set to %s", coord.api_id, extra={"model": coord.api_id})
        return coord.api_id

    # -- background work --------------------------------------------------------------------------

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        """Preload pinned/preload models (in the background) and start the monitor."""
        for coord in self.coordinators.values():
            if coord.entry.pinned or coord.entry.preload:
                self._spawn(self._preload(coord), f"preload {coord.api_id}")
        self._monitor = asyncio.create_task(self._monitor_loop(), name="monitor")

    async def _preload(self, coord: ModelCoordinator) -> None:
        try:
            await coord.load()
        except Exception as exc:
            log.error("preloading %s failed: %s", coord.api_id, exc, extra={"model": coord.api_id})

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.monitor_interval)
            now = time.monotonic()
            for coord in list(self.coordinators.values()):
                try:
                    await coord.check(now)
                except Exception:
                    log.exception("checking model %s failed", coord.api_id, extra={"model": coord.api_id})

    async def stop(self) -> None:
        """Stop background work; the app then closes the backend (which stops local runtimes)."""
        tasks = [t for t in (self._monitor, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
