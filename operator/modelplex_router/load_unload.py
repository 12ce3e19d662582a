"""The steps of one model's load and unload against its backend, for ``coordinator.ModelCoordinator``
(which keeps the state, the single-flight tasks and the lock these run under): start and wait for a ready
replica, record a failed load with its back-off, cancel a load for an unload, drain, stop."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from modelplex_router.backend import BackendLoadError
from modelplex_router.errors import LoadFailed
from modelplex_router.lifecycle import Event, ModelState

if TYPE_CHECKING:
    from modelplex_router.coordinator import ModelCoordinator

log = logging.getLogger("modelplex_router.lifecycle")


async def load(c: ModelCoordinator) -> None:
    """The one load of the model (``ModelCoordinator._start_load`` runs it as a single-flight task):
    start the backend, wait until a replica is ready, record the result."""
    async with c.lifecycle_lock:
        if c.state is ModelState.LOADED:
            return
        c.move(Event.LOAD)
        started = time.monotonic()
        log.info("loading model %s", c.api_id, extra={"model": c.api_id})
        progress = asyncio.create_task(_log_progress(c, started), name=f"progress {c.api_id}")
        try:
            await c.backend.ensure_started(c.api_id, c.entry)
            replicas = await c.backend.wait_ready(c.api_id, c.settings.load_timeout_seconds)
        except asyncio.CancelledError:
            # Unloaded while loading: stop what was started, then let the cancel through.
            await _stop_quietly(c, "after a cancelled load")
            c.move(Event.UNLOAD)
            c.move(Event.STOPPED)
            c.metrics.model_loads_total.labels(model=c.api_id, result="cancelled").inc()
            raise
        except Exception as exc:
            raise await _load_failed(c, exc, started) from None
        finally:
            progress.cancel()
        duration = time.monotonic() - started
        c.pool.sync(replicas)
        c.error = None
        c.occupancy.last_used = time.monotonic()
        c.backoff.succeeded()
        c.metrics.load_backoff.labels(model=c.api_id).set(0)
        c.move(Event.READY)
        c.metrics.model_loads_total.labels(model=c.api_id, result="success").inc()
        c.metrics.model_load_duration.labels(model=c.api_id).observe(duration)
        rss = None
        try:
            rss = c.observed(await c.backend.observe(c.api_id)).memory_bytes
        except Exception as exc:
            # The model is loaded and its waiters are served; only the memory figure is missing.
            log.warning("model %s: cannot observe it after loading: %s", c.api_id, exc)
        log.info(
            "model %s loaded in %.2fs",
            c.api_id,
            duration,
            extra={
                "model": c.api_id,
                "duration_s": round(duration, 3),
                "urls": [r.url for r in replicas.ready],
                "rss_bytes": rss,
            },
        )


async def _load_failed(c: ModelCoordinator, exc: Exception, started: float) -> LoadFailed:
    """Record a failed load (state, back-off, metrics, log); the error every waiter gets."""
    message = str(exc) if isinstance(exc, BackendLoadError) else f"{type(exc).__name__}: {exc}"
    await _stop_quietly(c, "after a failed load")
    c.error = message
    delay = c.backoff.failed(time.monotonic())
    c.metrics.load_backoff.labels(model=c.api_id).set(delay)
    c.move(Event.LOAD_FAILED)
    c.metrics.model_loads_total.labels(model=c.api_id, result="failure").inc()
    log.error(
        "model %s failed to load: %s (next automatic try in %.0fs)",
        c.api_id,
        message,
        delay,
        extra={
            "model": c.api_id,
            "duration_s": round(time.monotonic() - started, 3),
            "failures": c.backoff.failures,
            "backoff_s": delay,
        },
    )
    return LoadFailed(
        f"model {c.api_id!r} failed to load: {message}",
        headers={"Retry-After": str(max(1, round(delay)))},
    )


async def _stop_quietly(c: ModelCoordinator, when: str) -> None:
    try:
        await c.backend.stop(c.api_id, c.settings.stop_grace_seconds)
    except Exception as exc:
        log.warning("model %s: stopping its runtime %s failed: %s", c.api_id, when, exc)


async def _log_progress(c: ModelCoordinator, started: float) -> None:
    while True:
        await asyncio.sleep(10)
        log.info(
            "model %s still loading (%.0fs, %d requests waiting)",
            c.api_id,
            time.monotonic() - started,
            c.waiting,
            extra={
                "model": c.api_id,
                "elapsed_s": round(time.monotonic() - started, 1),
                "waiting": c.waiting,
            },
        )


async def unload(c: ModelCoordinator, reason: str) -> str:
    """Cancel a running load, drain in-flight requests (bounded), stop the runtime; the resulting status."""
    load = c._load_task
    if load is not None and not load.done():
        load.cancel()
        await asyncio.wait({load})
    async with c.lifecycle_lock:
        if c.state is ModelState.UNLOADED:
            return c.status
        was_failed = c.state is ModelState.FAILED
        c.move(Event.UNLOAD)
        if not was_failed and c.in_flight:
            await _drain(c)
        rss_before = await _rss(c)
        try:
            await c.backend.stop(c.api_id, c.settings.stop_grace_seconds)
        finally:
            # Even when stopping failed (an API error) the model must not stay draining: the next
            # load starts (or scales) the runtime again, which is idempotent.
            c.pool.clear()
            c.error = None
            c.move(Event.STOPPED)
            c.metrics.model_memory.labels(model=c.api_id).set(0)
        c.metrics.model_unloads_total.labels(model=c.api_id, reason=reason).inc()
        log.info(
            "model %s unloaded (%s); runtime RSS before: %s bytes",
            c.api_id,
            reason,
            rss_before,
            extra={"model": c.api_id, "reason": reason, "rss_bytes_before": rss_before},
        )
        return c.status


async def _rss(c: ModelCoordinator) -> int | None:
    try:
        return (await c.backend.observe(c.api_id)).memory_bytes
    except Exception:  # only for the log line: an API error must not fail the unload
        return None


async def _drain(c: ModelCoordinator) -> None:
    log.info("model %s: draining %d in-flight requests", c.api_id, c.in_flight, extra={"model": c.api_id})
    if not await c.occupancy.drained(c.settings.drain_grace_seconds):
        log.warning(
            "model %s: %d requests still running after %.0fs; stopping anyway",
            c.api_id,
            c.in_flight,
            c.settings.drain_grace_seconds,
            extra={"model": c.api_id},
        )
