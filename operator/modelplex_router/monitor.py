"""The periodic checks of every loaded model, and what the router does when a runtime dies or hangs.

Every ``monitor_interval`` seconds each model gets its own check task (at most one at a time per
model), so one slow check (a runtime being reaped, an API call, a probe waiting out its timeout) never
delays another model's. A check of a loaded model:

1. asks the backend whether the runtime still runs: one that died (or whose Deployment reports a
   failure) makes the model ``failed`` with the reason (the next request loads it again); one stopped
   by someone else makes it ``unloaded``;
2. unloads it when idle (``lifecycle.idle_unload_due``);
3. every ``health_check_interval_seconds``, asks the runtime itself (``health.HealthProbe``):
   ``health_check_failures`` failed checks in a row with no byte from the runtime meanwhile declare it
   hung. The requests still waiting on it end with 503 + ``Retry-After``, its process is ended (local)
   or its pod left to its liveness probe (Kubernetes), and the next request loads the model again.
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
            for task in self._checks.values():
                task.cancel()
            for task in self._checks.values():
                with contextlib.suppress(BaseException):
                    await task

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
    endpoint = coord.endpoint
    if endpoint is not None and endpoint.health.due(now, coord.settings.health_check_interval_seconds):
        await check_health(coord, endpoint, probe)


async def check_health(coord: ModelCoordinator, endpoint: Endpoint, probe: HealthProbe) -> None:
    """Probe the runtime once; declare it hung after too many failures in a row."""
    previous = endpoint.health.checked_at
    problem = await probe.problem(endpoint.url, engine_for(coord.entry).health_path)
    active = endpoint.last_activity > previous
    if endpoint.health.record(problem, time.monotonic(), active):
        await declare_hung(coord, endpoint, problem or "")
    elif problem is not None and not active:
        coord.metrics.health_check_failures.labels(model=coord.api_id).inc()
        log.warning(
            "model %s: health check failed (%s; %d of %d in a row)",
            coord.api_id,
            problem,
            endpoint.health.failures,
            endpoint.health.threshold,
            extra={"model": coord.api_id, "failures": endpoint.health.failures},
        )


async def declare_hung(coord: ModelCoordinator, endpoint: Endpoint, problem: str) -> None:
    """Stop routing to ``endpoint``, end the requests waiting on it (503) and end its runtime."""
    checks = endpoint.health.failures
    coord.metrics.health_check_failures.labels(model=coord.api_id).inc()
    message = f"hung: {problem}, {checks} health checks in a row; the next request loads the model again"
    if coord.lose(Event.HUNG, message, "hung", endpoint) is None:
        return  # unloaded or reloaded meanwhile
    endpoint.mark_lost(f"the runtime stopped answering ({problem}, {checks} health checks in a row)")
    log.error(
        "model %s: runtime hung (%s, %d checks in a row); ending it",
        coord.api_id,
        problem,
        checks,
        extra={"model": coord.api_id, "failures": checks},
    )
    await coord.reap(unresponsive=True)


async def runtime_gone(coord: ModelCoordinator, obs: BackendObservation) -> None:
    """A loaded model's runtime is not running any more, or fails where it runs (a Deployment reporting a
    replica failure): a crash; or it was stopped by someone else."""
    if not (obs.failed or obs.message):
        await coord.stopped_elsewhere()
        return
    message = obs.message or "the runtime exited"
    if coord.lose(Event.CRASHED, message, "crash") is None:
        return
    log.error("model %s: runtime died: %s", coord.api_id, message, extra={"model": coord.api_id})
    await coord.reap(unresponsive=False)


async def after_upstream_failure(coord: ModelCoordinator) -> None:
    """A request could not reach the runtime or lost it mid-response: find out whether it died."""
    if coord.state is not ModelState.LOADED:
        return
    obs = await coord.backend.observe(coord.api_id)
    if not obs.running or obs.failed:
        await runtime_gone(coord, obs)
