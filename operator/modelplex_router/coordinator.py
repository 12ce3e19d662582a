"""One model's lifecycle driver: single-flight loads, bounded waiting, back-off, drain accounting,
changes of its replica count, and what happens when a replica dies or hangs.

Backend-agnostic: all it needs is a ``ModelBackend``. The legal state moves come from
``lifecycle.transition``, the back-off from ``backoff``, which replica takes a request from the
model's ``ReplicaPool`` (``routing`` policies); this class adds the waiting and counting around them.
The steps of a load and an unload against the backend are ``load_unload.py``; the periodic checks that
call into it (idle unload, crashes, health) live in ``monitor.py``, the autoscaler in ``scaler.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Coroutine
from typing import Any

from modelplex_router import load_unload
from modelplex_router.backend import (
    BackendObservation,
    ModelBackend,
    Replicas,
    UsageRecorder,
)
from modelplex_router.backoff import BackoffPolicy, LoadBackoff
from modelplex_router.endpoint import Endpoint
from modelplex_router.errors import LoadFailed, LoadWaitTimeout, TooManyWaiting
from modelplex_router.lifecycle import Event, ModelState, api_status, transition
from modelplex_router.metrics import RouterMetrics
from modelplex_router.occupancy import Occupancy
from modelplex_router.replica_pool import ReplicaPool
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelEntry, Scaling

log = logging.getLogger("modelplex_router.lifecycle")

# A reload whose load an unload cancelled starts over after that unload, this many times at most.
_RELOAD_ATTEMPTS = 3
# A request for a loaded model with no replica taking requests (all restarting) looks again this often.
_NO_REPLICA_RECHECK_SECONDS = 1.0


class ModelCoordinator:
    def __init__(
        self,
        api_id: str,
        entry: ModelEntry,
        backend: ModelBackend,
        settings: RouterSettings,
        metrics: RouterMetrics,
    ) -> None:
        self.api_id = api_id
        self.entry = entry
        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.state = ModelState.UNLOADED
        self.error: str | None = None
        self.pool = ReplicaPool(api_id, settings.health_check_failures, settings.retry_after_seconds, metrics)
        self.last_scaling: tuple[float, int, int, str] | None = None
        """(epoch seconds, from, to, reason) of the last replica count change this router made."""
        # Before any of the model's series exists: they all carry its engine.
        metrics.set_engine(api_id, entry.engine)
        # Several router replicas share the backend's runtimes: tell the others about our uses.
        self.occupancy = Occupancy(api_id, metrics, backend if isinstance(backend, UsageRecorder) else None)
        self.backoff = LoadBackoff(
            BackoffPolicy(settings.load_backoff_initial_seconds, settings.load_backoff_max_seconds)
        )
        # Serialises backend start/stop for this model: a load queued behind an unload starts after it.
        self.lifecycle_lock = asyncio.Lock()
        self._load_task: asyncio.Task[None] | None = None
        self._unload_task: asyncio.Task[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._looking: asyncio.Task[None] | None = None
        metrics.set_status(api_id, self.state)
        metrics.load_backoff.labels(model=api_id).set(0)

    # -- status -----------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return api_status(self.state)

    @property
    def in_flight(self) -> int:
        return self.occupancy.in_flight

    @property
    def waiting(self) -> int:
        return self.occupancy.waiting

    @property
    def demand(self) -> int:
        """Requests in flight plus waiting in this router (the autoscaler's measure of load)."""
        return self.occupancy.in_flight + self.occupancy.waiting

    @property
    def scaling(self) -> Scaling:
        return self.entry.effective_scaling

    def replicas(self) -> Replicas:
        """The backend's view of the model's replicas (no I/O)."""
        return self.backend.replicas(self.api_id)

    @property
    def waiting_full(self) -> bool:
        return self.occupancy.waiting >= self.settings.max_waiting_per_model

    @property
    def lifecycle_busy(self) -> bool:
        """A load, unload or reap is under way (the monitor leaves the model alone meanwhile)."""
        return self.lifecycle_lock.locked()

    def retry_in(self, now: float | None = None) -> int | None:
        """Whole seconds until a failed model is loaded again automatically; None when not backing off."""
        now = time.monotonic() if now is None else now
        if self.state is not ModelState.FAILED or self.backoff.remaining(now) <= 0:
            return None
        return self.backoff.retry_after(now)

    def move(self, event: Event) -> None:
        before = self.state
        self.state = transition(self.state, event)
        self.metrics.set_status(self.api_id, self.state)
        log.info(
            "model %s: %s -> %s",
            self.api_id,
            before.value,
            self.state.value,
            extra={"model": self.api_id, "event": event.value, "from": before.value, "to": self.state.value},
        )

    # -- serving ----------------------------------------------------------------------------------

    def try_acquire(self, affinity: str | None = None, avoid: Collection[Endpoint] = ()) -> Endpoint | None:
        """A replica for the request, which is counted in flight on it; None when the model must load
        first (or, loaded, has no replica taking requests right now). ``affinity``: the request's prompt
        prefix (``affinity``); ``avoid``: replicas that just failed it."""
        if self.state is not ModelState.LOADED:
            return None
        self.pool.sync(self.backend.replicas(self.api_id))
        endpoint = self.pool.pick(self.scaling, affinity, avoid)
        if endpoint is not None:
            self.occupancy.enter()
        return endpoint

    async def acquire(self, affinity: str | None = None, avoid: Collection[Endpoint] = ()) -> Endpoint:
        """Wait (bounded) until the model is loaded, loading it if needed, and a replica takes the request;
        count the request in flight."""
        endpoint = self.try_acquire(affinity, avoid)
        if endpoint is not None:
            return endpoint
        self.check_can_wait()
        with self.occupancy.waiting_for_load():
            deadline = time.monotonic() + self.settings.max_wait_seconds
            while True:
                endpoint = self.try_acquire(affinity, avoid)
                if endpoint is not None:
                    return endpoint
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._wait_timeout()
                if self.state is ModelState.LOADED:
                    # Loaded, but every replica is restarting or going away: wait for the next one.
                    if not self.backend.replicas(self.api_id).members:
                        self._look_now()
                    await self.backend.replicas_changed(
                        self.api_id, self.pool.version, min(remaining, _NO_REPLICA_RECHECK_SECONDS)
                    )
                    continue
                self._check_backoff()
                task = self._start_load()
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if not done:
                    raise self._wait_timeout()
                if task.cancelled():
                    # An unload cancelled the load. The request still wants the model: the next turn
                    # starts another load, which runs once that unload is done (or joins a reload's).
                    continue
                exc = task.exception()
                if exc is not None:
                    raise exc

    def check_can_wait(self) -> None:
        """TooManyWaiting (429) when this model's waiting room is full; LoadFailed (503) while it backs off
        after failed loads. Both before any byte of a held stream is sent."""
        if self.waiting_full:
            raise TooManyWaiting(
                f"too many requests are waiting for model {self.api_id!r} to load "
                f"(limit {self.settings.max_waiting_per_model}); retry later",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        self._check_backoff()

    def _check_backoff(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            return  # a load (a reload) is under way: join it
        retry_in = self.retry_in()
        if retry_in is not None:
            raise LoadFailed(
                f"model {self.api_id!r} failed to load: {self.error}; "
                f"next automatic try in {retry_in}s ({self.backoff.failures} failures in a row)",
                headers={"Retry-After": str(retry_in)},
            )

    def _wait_timeout(self) -> LoadWaitTimeout:
        return LoadWaitTimeout(
            f"model {self.api_id!r} is still loading after {self.settings.max_wait_seconds:g}s; retry later",
            headers={"Retry-After": str(self.settings.retry_after_seconds)},
        )

    def release(self, endpoint: Endpoint) -> None:
        """A request counted by acquire on ``endpoint`` has finished (its response is sent or abandoned)."""
        self.occupancy.leave()
        self.pool.leave(endpoint)

    # -- loading ----------------------------------------------------------------------------------

    def _start_load(self) -> asyncio.Task[None]:
        """The one load task for this model (single flight): running, or started now."""
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.create_task(self._load(), name=f"load {self.api_id}")
            # Waiters read the result; keep an unobserved failure from being logged as "never retrieved".
            self._load_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._load_task

    async def load(self) -> None:
        """Load the model now, back-off or not (``reload``), and wait for it without the request wait
        bound. A load that an unload cancels starts over once the unload is done. LoadFailed on failure."""
        for _ in range(_RELOAD_ATTEMPTS):
            if self.state is ModelState.LOADED:
                return
            task = self._start_load()
            # wait(), not the task itself: a cancelled load must not cancel (or escape from) this call.
            await asyncio.wait({task})
            if not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc
        if self.state is not ModelState.LOADED:
            raise LoadFailed(f"model {self.api_id!r} was unloaded while it was loading, repeatedly")

    async def _load(self) -> None:
        await load_unload.load(self)

    # -- unloading --------------------------------------------------------------------------------

    async def unload(self, reason: str = "request") -> str:
        """Drain in-flight requests (bounded), stop the runtime; returns the resulting status."""
        return await asyncio.shield(self.start_unload(reason))

    def start_unload(self, reason: str) -> asyncio.Task[str]:
        if self._unload_task is None or self._unload_task.done():
            self._unload_task = asyncio.create_task(self._unload(reason), name=f"unload {self.api_id}")
            self._unload_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._unload_task

    async def _unload(self, reason: str) -> str:
        return await load_unload.unload(self, reason)

    # -- what the monitor (monitor.py) reads and changes -------------------------------------------

    def observed(self, obs: BackendObservation) -> BackendObservation:
        """Keep the memory metric current from an observation."""
        if obs.memory_bytes is not None:
            self.metrics.model_memory.labels(model=self.api_id).set(obs.memory_bytes)
        return obs

    def _look_now(self) -> None:
        """The backend lists no replica at all while the model counts as loaded (its only process died):
        the monitor's look at the backend runs now (once at a time), not at its next tick, so a request
        waiting here finds the crash and reloads the model instead of waiting out ``monitor_interval``."""
        if self._looking is None or self._looking.done():
            from modelplex_router.monitor import after_upstream_failure  # monitor imports this module

            self._looking = asyncio.get_running_loop().create_task(after_upstream_failure(self))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for this model in the background (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
