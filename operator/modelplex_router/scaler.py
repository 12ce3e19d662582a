"""The autoscaler's loop: sample each loaded model's load, decide its replica count, apply the change.

Every ``scale_interval_seconds`` the ``Scaler``:

1. shares this router's load per model (``SharedLoad.publish``: on Kubernetes it also renews or takes the
   scaling lease, ``kube_lease.py``; a no-op for a router that is alone);
2. adds every loaded model's load over all routers (``cluster_load``) to its ``LoadHistory``, which
   also records the count that load calls for (``autoscale``), so every router keeps the same history;
3. in the router that leads (the one holding the scaling lease; always, when alone) and with the
   autoscaler on, asks ``autoscale.decide`` for the count and, when it differs, applies it with
   ``scale_to`` (one change at a time per model).

``scale_to`` scales up by asking the backend for more replicas (they take requests once ready) and
down by first draining the replicas it takes away (the least busy; replicas still starting go first),
so no request of this router is cut, then asking the backend to remove exactly those. Scaling to zero
is not the autoscaler's: idle and explicit unloads do that (``monitor.py``, ``coordinator.unload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from modelplex_router.autoscale import Decision, LoadHistory, decide
from modelplex_router.backend import SharedLoad
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.endpoint import Endpoint
from modelplex_router.lifecycle import ModelState
from modelplex_router.metrics import RouterMetrics
from modelplex_router.monitor import cancel_and_wait

log = logging.getLogger("modelplex_router.scaling")

_SHUTDOWN_BOUND_SECONDS = 5.0


class AloneLoad:
    """``SharedLoad`` for a router that is the only one (the local backend): it leads, its load is all."""

    leading = True

    async def publish(self, loads: Mapping[str, float]) -> None:
        return None

    def cluster_load(self, api_id: str, own: float) -> float:
        return own


class Scaler:
    def __init__(
        self,
        coordinators: Callable[[], Iterable[ModelCoordinator]],
        shared: SharedLoad,
        interval: float,
        enabled: bool,
        metrics: RouterMetrics,
    ) -> None:
        self._coordinators = coordinators
        self._shared = shared
        self._interval = interval
        self._enabled = enabled
        self._metrics = metrics
        self._histories: dict[str, LoadHistory] = {}
        self._actions: dict[str, asyncio.Task[None]] = {}
        self._publish_problem: str | None = None
        self._publishing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.tick(time.monotonic())
        finally:
            # Bounded: a scale call or a lease renewal stuck in the API must not hold up the router's exit.
            pending = [*self._actions.values(), *([self._publishing] if self._publishing else [])]
            await cancel_and_wait(pending, _SHUTDOWN_BOUND_SECONDS)

    async def tick(self, now: float) -> None:
        coords = list(self._coordinators())
        if self._enabled and (self._publishing is None or self._publishing.done()):
            # In the background, one at a time: the decisions below never wait for the API (they use the
            # others' load as last read). Switched off, the router shares nothing (on Kubernetes: no Leases).
            loads = {coord.api_id: float(coord.demand) for coord in coords}
            self._publishing = asyncio.create_task(self._publish(loads), name="share load")
        self._actions = {api_id: task for api_id, task in self._actions.items() if not task.done()}
        self._histories = {c.api_id: self._histories.get(c.api_id) or LoadHistory() for c in coords}
        for coord in coords:
            self._metrics.note_replicas(coord.api_id, coord.replicas())
            history = self._histories[coord.api_id]
            if coord.state is not ModelState.LOADED:
                history.clear()
                continue
            scaling = coord.scaling
            average = history.add(now, self._shared.cluster_load(coord.api_id, coord.demand), scaling)
            self._metrics.load_average.labels(model=coord.api_id).set(average)
            if not (self._enabled and self._shared.leading) or coord.api_id in self._actions:
                continue
            current = coord.replicas().desired
            if current < 1 or coord.lifecycle_busy:
                continue  # unloaded (here or by another router), or a load or unload is under way
            decision = decide(current, average, history, now, scaling)
            if decision.desired != current:
                self._actions[coord.api_id] = asyncio.create_task(
                    self._apply(coord, decision), name=f"scale {coord.api_id}"
                )

    async def _publish(self, loads: dict[str, float]) -> None:
        try:
            await self._shared.publish(loads)
        except Exception as exc:
            # Only the leader's view of this router's load suffers: serving goes on. Logged once per problem.
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._publish_problem:
                log.warning("cannot share this router's load: %s", problem)
            self._publish_problem = problem
        else:
            self._publish_problem = None

    async def _apply(self, coord: ModelCoordinator, decision: Decision) -> None:
        try:
            await scale_to(coord, decision.desired, decision.reason)
        except Exception as exc:
            log.warning(
                "model %s: scaling to %d replicas failed: %s",
                coord.api_id,
                decision.desired,
                exc,
                extra={"model": coord.api_id},
            )


async def scale_to(coord: ModelCoordinator, desired: int, reason: str) -> bool:
    """Change a loaded model's replica count to ``desired`` (see the module docstring); False when it
    did not happen (not loaded any more, or someone changed the count meanwhile)."""
    replicas = coord.replicas()
    current = replicas.desired
    if desired == current or desired < 1:
        return False
    victims: list[Endpoint] = []
    if desired < current:
        starting = len(replicas.members) - len(replicas.ready)
        # Never more than leaves ``desired`` routable: a backend that reports one address for all its
        # replicas (a Service) has nothing to drain; its pods drain on their own (SIGTERM).
        routable = coord.pool.ready_count
        victims = coord.pool.retire(max(0, min(current - desired - starting, routable - desired)))
    try:
        if victims:
            await _drained(victims, coord.settings.drain_grace_seconds)
        async with coord.lifecycle_lock:
            if coord.state is not ModelState.LOADED or coord.replicas().desired != current:
                coord.pool.restore(victims)
                return False
            await coord.backend.scale(
                coord.api_id, desired, reason=reason, remove=[ep.replica_id for ep in victims]
            )
    except BaseException:
        coord.pool.restore(victims)
        raise
    direction = "up" if desired > current else "down"
    coord.last_scaling = (time.time(), current, desired, reason)
    coord.metrics.scaling_decisions.labels(model=coord.api_id, direction=direction).inc()
    log.info(
        "model %s: %d -> %d replicas: %s",
        coord.api_id,
        current,
        desired,
        reason,
        extra={"model": coord.api_id, "from": current, "to": desired, "reason": reason},
    )
    return True


async def _drained(endpoints: list[Endpoint], grace_seconds: float) -> None:
    """Wait (at most ``grace_seconds``) until no request of this router runs on ``endpoints``; the ones
    still running after that are left to the runtime's own drain on SIGTERM."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ep.idle() for ep in endpoints)), grace_seconds)
