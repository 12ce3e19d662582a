"""The set of models behind the endpoint: the catalog, one coordinator per model, the default model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from modelplex_router.backend import ModelBackend, SharedLoad
from modelplex_router.catalog import Catalog, CatalogChange, diff_catalog
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.errors import ModelNotFound
from modelplex_router.health import HealthProbe
from modelplex_router.metrics import RouterMetrics
from modelplex_router.monitor import Monitor
from modelplex_router.scaler import AloneLoad, Scaler
from modelplex_router.settings import RouterSettings
from modelplex_spec import ConfigError, ModelplexConfig

log = logging.getLogger("modelplex_router")

CatalogSource = Callable[[], Awaitable[ModelplexConfig]]
"""Reads the current models (Kubernetes: the MultiModels); the router re-reads it periodically."""


class ModelRouter:
    def __init__(
        self,
        config: ModelplexConfig,
        backend: ModelBackend,
        settings: RouterSettings,
        metrics: RouterMetrics,
        catalog_source: CatalogSource | None = None,
    ) -> None:
        self.catalog = Catalog.from_config(config)
        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.default_id = config.default_model_id
        # Set through POST /v1/models/default: then a catalog refresh keeps it (while the model exists).
        self.default_from_api = False
        self.created = int(time.time())
        self.coordinators = {
            api_id: ModelCoordinator(api_id, entry, backend, settings, metrics)
            for api_id, entry in self.catalog.entries.items()
        }
        self._catalog_source = catalog_source
        self._background: set[asyncio.Task[None]] = set()
        self._probe = HealthProbe(settings.health_check_timeout_seconds)
        self._monitor: asyncio.Task[None] | None = None
        self._scaler: asyncio.Task[None] | None = None
        self.shared_load: SharedLoad = backend if isinstance(backend, SharedLoad) else AloneLoad()
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_problem: str | None = None

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
        self.default_from_api = True
        log.info("default model set to %s", coord.api_id, extra={"model": coord.api_id})
        return coord.api_id

    # -- catalog changes ---------------------------------------------------------------------------

    def apply_config(self, config: ModelplexConfig) -> CatalogChange:
        """Serve the models of ``config`` from now on: new ones get a coordinator, removed ones answer
        404 at once (their in-flight requests finish, then they are unloaded), changed ones keep their
        runtime and take the new entry (a changed pod template is the operator's business)."""
        catalog, change = diff_catalog(
            self.catalog, self.default_id, config, keep_default=self.default_from_api
        )
        if change.empty and change.default_id == self.default_id:
            return change
        old = self.coordinators
        coordinators: dict[str, ModelCoordinator] = {}
        preload: list[ModelCoordinator] = []
        for api_id, entry in catalog.entries.items():
            coord = old.get(api_id)
            if coord is None:
                coord = ModelCoordinator(api_id, entry, self.backend, self.settings, self.metrics)
            elif not (coord.entry.pinned or coord.entry.preload) and (entry.pinned or entry.preload):
                preload.append(coord)
            coord.entry = entry
            self.metrics.set_engine(api_id, entry.engine)
            coordinators[api_id] = coord
            if api_id in change.added and (entry.pinned or entry.preload):
                preload.append(coord)
        # Swapped together, with no await in between: a request sees the old set or the new one.
        self.catalog, self.coordinators = catalog, coordinators
        if self.default_id not in catalog.entries:
            self.default_from_api = False
        self.default_id = change.default_id
        for api_id in change.removed:
            self._spawn(self._retire(old[api_id]), f"retire {api_id}")
        for coord in preload:
            self._spawn(self._preload(coord), f"preload {coord.api_id}")
        log.info(
            "models changed: added %s, removed %s, changed %s; default %s",
            list(change.added) or "-",
            change.removed or "-",
            list(change.changed) or "-",
            self.default_id,
            extra={
                "added": list(change.added),
                "removed": change.removed,
                "changed": list(change.changed),
                "default": self.default_id,
            },
        )
        return change

    async def _retire(self, coord: ModelCoordinator) -> None:
        try:
            await coord.unload(reason="removed")
        except Exception as exc:
            # On Kubernetes the operator may have deleted the Deployment already: nothing left to stop.
            log.info("model %s removed; stopping it: %s", coord.api_id, exc, extra={"model": coord.api_id})

    async def refresh_catalog(self) -> CatalogChange | None:
        """Read the catalog source once and apply it; None (old catalog kept) when it cannot be read."""
        if self._catalog_source is None:
            return None
        try:
            config = await self._catalog_source()
        except Exception as exc:
            invalid = isinstance(exc, ConfigError)
            problem = f"{'invalid models' if invalid else 'cannot read the models'}: {exc}"
            # Once per distinct problem, not on every pass.
            if problem != self._refresh_problem:
                log.log(
                    logging.ERROR if invalid else logging.WARNING, "%s; keeping the previous ones", problem
                )
            self._refresh_problem = problem
            return None
        self._refresh_problem = None
        return self.apply_config(config)

    async def _refresh_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh_catalog()

    # -- background work --------------------------------------------------------------------------

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        """Preload pinned/preload models (in the background) and start the monitor and the autoscaler."""
        for coord in self.coordinators.values():
            if coord.entry.pinned or coord.entry.preload:
                self._spawn(self._preload(coord), f"preload {coord.api_id}")
        monitor = Monitor(lambda: self.coordinators.values(), self.settings.monitor_interval, self._probe)
        self._monitor = asyncio.create_task(monitor.run(), name="monitor")
        scaler = Scaler(
            lambda: self.coordinators.values(),
            self.shared_load,
            self.settings.scale_interval_seconds,
            self.settings.autoscaler,
            self.metrics,
        )
        self._scaler = asyncio.create_task(scaler.run(), name="autoscaler")
        self.metrics.track_leading(lambda: self.shared_load.leading)
        if self._catalog_source is not None and self.settings.catalog_refresh_seconds > 0:
            self._refresher = asyncio.create_task(
                self._refresh_loop(self.settings.catalog_refresh_seconds), name="catalog refresh"
            )

    async def _preload(self, coord: ModelCoordinator) -> None:
        try:
            await coord.load()
        except Exception as exc:
            log.error("preloading %s failed: %s", coord.api_id, exc, extra={"model": coord.api_id})

    async def stop(self) -> None:
        """Stop background work; the app then closes the backend (which stops local runtimes)."""
        for coord in self.coordinators.values():
            coord.occupancy.cancel_background()
        tasks = [t for t in (self._monitor, self._scaler, self._refresher, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self._probe.aclose()
