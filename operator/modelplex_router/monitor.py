"""The periodic checks of every loaded model, and what the router does when a replica dies or hangs.

Every ``monitor_interval`` seconds each model gets its own check task (at most one at a time per
model), so one slow check (a runtime being reaped, an API call, a probe waiting out its timeout) never
delays another model's. A check of a loaded model:

1. asks the backend whether the model still runs: one whose replicas all died (or whose Deployment
   reports a failure) becomes ``failed`` with the reason (the next request loads it again); one stopped
   by someone else becomes ``unloaded``. A replica that went away while others run leaves the pool
   (``ReplicaPool.sync``; the backend replaces it);
2. unloads it when idle (``lifecycle.idle_unload_due``);
3. every ``health_check_interval_seconds``, asks each replica itself (``health.HealthProbe``):
   ``health_check_failures`` failed checks in a row with no byte from the replica meanwhile declare it
   hung. The requests still waiting on it end with 503 + ``Retry-After``, its process is ended (local)
   or its pod left to its liveness probe (Kubernetes). When other replicas run the model stays loaded
   on them; when it was the last, the model is ``failed`` and the next request loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from modelplex_router.backend import BackendObservation
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.endpoint import Endpoint
from modelplex_router.health import HealthProbe
from modelplex_router.lifecycle import Event, ModelState, idle_unload_due
from modelplex_spec.engines import engine_for

log = logging.getLogger("modelplex_router.lifecycle")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]], bound: float | None = None) -> None:
    """Cancel background tasks and wait until each has ended (whatever it ended with), or ``bound`` seconds."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if bound is not None:
        if tasks:
            await asyncio.wait(tasks, timeout=bound)
        return
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


class Monitor:
    def __init__(
        self, coordinators: Callable[[], Iterable[ModelCoordinator]], interval: float, probe: HealthProbe
    ) -> None:
        self._coordinators = coordinators
        self._interval = interval
        self._probe = probe
        self._checks: dict[ModelCoordinator, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.check_all(time.monotonic())
        finally:
            await cancel_and_wait(self._checks.values())

    def check_all(self, now: float) -> None:
        """Start a check for every model whose previous check has finished."""
        self._checks = {coord: task for coord, task in self._checks.items() if not task.done()}
        for coord in list(self._coordinators()):
            if coord not in self._checks:
                self._checks[coord] = asyncio.create_task(
                    self._check(coord, now), name=f"check {coord.api_id}"
                )

    async def _check(self, coord: ModelCoordinator, now: float) -> None:
        try:
            await check_model(coord, self._probe, now)
        except Exception:
            log.exception("checking model %s failed", coord.api_id, extra={"model": coord.api_id})


async def check_model(coord: ModelCoordinator, probe: HealthProbe, now: float) -> None:
    """One periodic check of one model (see the module docstring)."""
    if coord.state is not ModelState.LOADED or coord.lifecycle_busy:
        return
    obs = await coord.backend.observe(coord.api_id)
    if not obs.running or obs.failed:
        await runtime_gone(coord, obs)
        return
    coord.observed(obs)
    coord.pool.sync(coord.replicas())
    occupancy = coord.occupancy
    if occupancy.busy:
        # Long requests count as use for the whole time they run, not only when they start.
        occupancy.note_used()
    idle_shared = None if obs.last_used is None else time.time() - obs.last_used
    idle_here = now - occupancy.last_used
    if idle_unload_due(coord.entry.idle_timeout, coord.entry.pinned, occupancy.busy, idle_here, idle_shared):
        log.info(
            "model %s idle for %.0fs; unloading",
            coord.api_id,
            idle_here if idle_shared is None else min(idle_here, idle_shared),
            extra={"model": coord.api_id},
        )
        # In the background: a slow runtime exit must not hold up this model's next checks either.
        coord.start_unload("idle")
        return
    interval = coord.settings.health_check_interval_seconds
    due = [ep for ep in coord.pool.routable() if ep.health.due(now, interval)]
    await asyncio.gather(*(check_health(coord, ep, probe) for ep in due))


async def check_health(coord: ModelCoordinator, endpoint: Endpoint, probe: HealthProbe) -> None:
    """Probe one replica once; declare it hung after too many failures in a row."""
    previous = endpoint.health.checked_at
    problem = await probe.problem(endpoint.url, engine_for(coord.entry).health_path)
    active = endpoint.last_activity > previous
    if endpoint.health.record(problem, time.monotonic(), active):
        await declare_hung(coord, endpoint, problem or "")
    elif problem is not None and not active:
        coord.metrics.health_check_failures.labels(model=coord.api_id).inc()
        log.warning(
            "model %s: health check of %s failed (%s; %d of %d in a row)",
            coord.api_id,
            endpoint.replica_id,
            problem,
            endpoint.health.failures,
            endpoint.health.threshold,
            extra={"model": coord.api_id, "replica": endpoint.replica_id, "failures": endpoint.health.failures},
        )


async def declare_hung(coord: ModelCoordinator, endpoint: Endpoint, problem: str) -> None:
    """Stop routing to ``endpoint``, end the requests waiting on it (503) and end its replica; when it was
    the model's last, the model has failed."""
    checks = endpoint.health.failures
    coord.metrics.health_check_failures.labels(model=coord.api_id).inc()
    message = f"hung: {problem}, {checks} health checks in a row; the next request loads the model again"
    if coord.pool.endpoints.get(endpoint.replica_id) is not endpoint or coord.state is not ModelState.LOADED:
        return  # unloaded, reloaded or replaced meanwhile
    endpoint.mark_lost(f"the runtime stopped answering ({problem}, {checks} health checks in a row)")
    log.error(
        "model %s: replica %s hung (%s, %d checks in a row); ending it",
        coord.api_id,
        endpoint.replica_id,
        problem,
        checks,
        extra={"model": coord.api_id, "replica": endpoint.replica_id, "failures": checks},
    )
    if lose_replica(coord, endpoint, Event.HUNG, message, "hung"):
        await coord.backend.end_unresponsive(coord.api_id, endpoint.replica_id)
    else:
        await reap(coord, unresponsive=endpoint)


async def runtime_gone(coord: ModelCoordinator, obs: BackendObservation) -> None:
    """A loaded model's runtime is not running any more, or fails where it runs (a Deployment reporting a
    replica failure): a crash; or it was stopped by someone else."""
    if not (obs.failed or obs.message):
        await stopped_elsewhere(coord)
        return
    message = obs.message or "the runtime exited"
    if not lose(coord, Event.CRASHED, message, "crash"):
        return
    log.error("model %s: runtime died: %s", coord.api_id, message, extra={"model": coord.api_id})
    await reap(coord)


async def after_upstream_failure(coord: ModelCoordinator) -> None:
    """A request could not reach a replica or lost it mid-response: find out whether the model died
    (a replica that died while others run leaves the pool at the backend's next change)."""
    if coord.state is not ModelState.LOADED:
        return
    obs = await coord.backend.observe(coord.api_id)
    if not obs.running or obs.failed:
        await runtime_gone(coord, obs)
    else:
        coord.pool.sync(coord.replicas())


# -- the state changes behind them ----------------------------------------------------------------


def lose(coord: ModelCoordinator, event: Event, message: str, reason: str) -> bool:
    """The loaded model's runtime died (``CRASHED``) or stopped answering (``HUNG``): record why and
    route nothing more to it; the next request loads the model again. False (nothing done) when the
    model is not loaded."""
    if coord.state is not ModelState.LOADED:
        return False
    coord.error = message
    coord.pool.clear()
    coord.move(event)
    coord.metrics.model_memory.labels(model=coord.api_id).set(0)
    coord.metrics.model_unloads_total.labels(model=coord.api_id, reason=reason).inc()
    return True


def lose_replica(coord: ModelCoordinator, endpoint: Endpoint, event: Event, message: str, reason: str) -> bool:
    """One replica is lost: when others take requests only it leaves the pool (the backend replaces it)
    and the model stays loaded (True); when it was the last, the whole model is lost (False)."""
    others = [ep for ep in coord.pool.routable() if ep is not endpoint]
    if not others:
        lose(coord, event, message, reason)
        return False
    coord.pool.remove(endpoint)
    coord.metrics.replica_failures.labels(model=coord.api_id, reason=reason).inc()
    return True


async def reap(coord: ModelCoordinator, unresponsive: Endpoint | None = None) -> None:
    """End what is left of a lost model (exited processes, a crash-looping pod, a frozen process:
    ``unresponsive``) so the next load starts clean."""
    async with coord.lifecycle_lock:
        if unresponsive is not None:
            await coord.backend.end_unresponsive(coord.api_id, unresponsive.replica_id)
        else:
            await coord.backend.stop(coord.api_id, coord.settings.stop_grace_seconds)


async def stopped_elsewhere(coord: ModelCoordinator) -> None:
    """Someone else stopped the runtime on purpose (another router replica's idle unload, `kubectl
    scale`): not a failure; the model is unloaded and the next request loads it again."""
    async with coord.lifecycle_lock:
        if coord.state is not ModelState.LOADED:
            return
        coord.pool.clear()
        coord.move(Event.UNLOAD)
        coord.move(Event.STOPPED)
        coord.metrics.model_memory.labels(model=coord.api_id).set(0)
        coord.metrics.model_unloads_total.labels(model=coord.api_id, reason="external").inc()
        log.info(
            "model %s: its runtime was stopped outside this router; now unloaded",
            coord.api_id,
            extra={"model": coord.api_id},
        )
