"""One model's lifecycle driver: single-flight loads, bounded waiting, drain accounting, idle unload.

Backend-agnostic: all it needs is a ``ModelBackend``. The legal state moves come from
``lifecycle.transition``; this class adds the waiting and counting around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelplex_router.backend import BackendLoadError, BackendObservation, ModelBackend, UsageRecorder
from modelplex_router.errors import LoadFailed, LoadWaitTimeout, TooManyWaiting
from modelplex_router.lifecycle import Event, ModelState, api_status, idle_unload_due, transition
from modelplex_router.metrics import RouterMetrics
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_router.lifecycle")


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
        self._backend = backend
        self._settings = settings
        self._metrics = metrics
        self.state = ModelState.UNLOADED
        self.error: str | None = None
        self.url: str | None = None
        self.in_flight = 0
        self.waiting = 0
        self.last_used = time.monotonic()
        self._drained = asyncio.Event()
        self._drained.set()
        # Serialises backend start/stop for this model: a load queued behind an unload starts after it.
        self._lifecycle_lock = asyncio.Lock()
        self._load_task: asyncio.Task[None] | None = None
        self._unload_task: asyncio.Task[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Several router replicas share the backend's runtimes: tell the others about our uses.
        self._usage = backend if isinstance(backend, UsageRecorder) else None
        self._note_task: asyncio.Task[None] | None = None
        metrics.set_status(api_id, self.state)
        metrics.requests_waiting.labels(model=api_id).set(0)
        metrics.requests_in_flight.labels(model=api_id).set(0)

    # -- status -----------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return api_status(self.state)

    @property
    def waiting_full(self) -> bool:
        return self.waiting >= self._settings.max_waiting_per_model

    def _move(self, event: Event) -> None:
        before = self.state
        self.state = transition(self.state, event)
        self._metrics.set_status(self.api_id, self.state)
        log.info(
            "model %s: %s -> %s",
            self.api_id,
            before.value,
            self.state.value,
            extra={"model": self.api_id, "event": event.value, "from": before.value, "to": self.state.value},
        )

    # -- serving ----------------------------------------------------------------------------------

    def try_acquire(self) -> str | None:
        """The runtime URL with the request counted in flight, or None when the model must load first."""
        if self.state is ModelState.LOADED and self.url is not None:
            self._enter()
            return self.url
        return None

    async def acquire(self) -> str:
        """Wait (bounded) until the model is loaded, loading it if needed; count the request in flight."""
        url = self.try_acquire()
        if url is not None:
            return url
        self.check_can_wait()
        self.waiting += 1
        self._metrics.requests_waiting.labels(model=self.api_id).set(self.waiting)
        try:
            deadline = time.monotonic() + self._settings.max_wait_seconds
            while True:
                url = self.try_acquire()
                if url is not None:
                    return url
                task = self._start_load()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._wait_timeout()
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if not done:
                    raise self._wait_timeout()
                if task.cancelled():
                    raise LoadFailed(
                        f"model {self.api_id!r} was unloaded while it was loading; retry",
                        headers={"Retry-After": "1"},
                    )
                exc = task.exception()
                if exc is not None:
                    raise exc
        finally:
            self.waiting -= 1
            self._metrics.requests_waiting.labels(model=self.api_id).set(self.waiting)

    def check_can_wait(self) -> None:
        """TooManyWaiting (429) when this model's waiting room is full."""
        if self.waiting_full:
            raise TooManyWaiting(
                f"too many requests are waiting for model {self.api_id!r} to load "
                f"(limit {self._settings.max_waiting_per_model}); retry later",
                headers={"Retry-After": str(self._settings.retry_after_seconds)},
            )

    def _wait_timeout(self) -> LoadWaitTimeout:
        return LoadWaitTimeout(
            f"model {self.api_id!r} is still loading after {self._settings.max_wait_seconds:g}s; retry later",
            headers={"Retry-After": str(self._settings.retry_after_seconds)},
        )

    def _enter(self) -> None:
        self.in_flight += 1
        self._drained.clear()
        self.last_used = time.monotonic()
        self._metrics.requests_in_flight.labels(model=self.api_id).set(self.in_flight)
        self._note_used()

    def _note_used(self) -> None:
        """Share the use with other router replicas, off the request path (the backend throttles)."""
        if self._usage is None or (self._note_task is not None and not self._note_task.done()):
            return
        self._note_task = asyncio.get_running_loop().create_task(
            self._write_use(self._usage), name=f"note use {self.api_id}"
        )

    async def _write_use(self, usage: UsageRecorder) -> None:
        try:
            await usage.note_used(self.api_id)
        except Exception as exc:
            # Only the other replicas' idle decisions depend on it; the request must not suffer.
            log.warning(
                "model %s: could not record its use: %s", self.api_id, exc, extra={"model": self.api_id}
            )

    def release(self) -> None:
        """A request counted by acquire has finished (its response is fully sent or abandoned)."""
        self.in_flight -= 1
        self.last_used = time.monotonic()
        self._metrics.requests_in_flight.labels(model=self.api_id).set(self.in_flight)
        if self.in_flight == 0:
            self._drained.set()

    # -- loading ----------------------------------------------------------------------------------

    def _start_load(self) -> asyncio.Task[None]:
        """The one load task for this model (single flight): running, or started now."""
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.create_task(self._load(), name=f"load {self.api_id}")
            # Waiters read the result; keep an unobserved failure from being logged as "never retrieved".
            self._load_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._load_task

    async def load(self) -> None:
        """Load the model (or join the running load) and wait for it, without the request wait bound."""
        if self.state is ModelState.LOADED:
            return
        task = self._start_load()
        await asyncio.shield(task)

    async def _load(self) -> None:
        async with self._lifecycle_lock:
            if self.state is ModelState.LOADED:
                return
            self._move(Event.LOAD)
            started = time.monotonic()
            log.info("loading model %s", self.api_id, extra={"model": self.api_id})
            progress = asyncio.create_task(self._log_progress(started), name=f"progress {self.api_id}")
            try:
                await self._backend.ensure_started(self.api_id, self.entry)
                url = await self._backend.wait_ready(self.api_id, self._settings.load_timeout_seconds)
            except asyncio.CancelledError:
                # Unloaded while loading: stop what was started, then let the cancel through.
                await self._backend.stop(self.api_id, self._settings.stop_grace_seconds)
                self._move(Event.UNLOAD)
                self._move(Event.STOPPED)
                self._metrics.model_loads_total.labels(model=self.api_id, result="cancelled").inc()
                raise
            except Exception as exc:
                message = str(exc) if isinstance(exc, BackendLoadError) else f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    await self._backend.stop(self.api_id, self._settings.stop_grace_seconds)
                self.error = message
                self._move(Event.LOAD_FAILED)
                self._metrics.model_loads_total.labels(model=self.api_id, result="failure").inc()
                log.error(
                    "model %s failed to load: %s",
                    self.api_id,
                    message,
                    extra={"model": self.api_id, "duration_s": round(time.monotonic() - started, 3)},
                )
                raise LoadFailed(f"model {self.api_id!r} failed to load: {message}") from None
            finally:
                progress.cancel()
            duration = time.monotonic() - started
            self.url = url
            self.error = None
            self.last_used = time.monotonic()
            self._move(Event.READY)
            self._metrics.model_loads_total.labels(model=self.api_id, result="success").inc()
            self._metrics.model_load_duration.labels(model=self.api_id).observe(duration)
            obs = await self._backend.observe(self.api_id)
            if obs.memory_bytes is not None:
                self._metrics.model_memory.labels(model=self.api_id).set(obs.memory_bytes)
            log.info(
                "model %s loaded in %.2fs",
                self.api_id,
                duration,
                extra={
                    "model": self.api_id,
                    "duration_s": round(duration, 3),
                    "url": url,
                    "rss_bytes": obs.memory_bytes,
                },
            )

    async def _log_progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(10)
            log.info(
                "model %s still loading (%.0fs, %d requests waiting)",
                self.api_id,
                time.monotonic() - started,
                self.waiting,
                extra={
                    "model": self.api_id,
                    "elapsed_s": round(time.monotonic() - started, 1),
                    "waiting": self.waiting,
                },
            )

    # -- unloading --------------------------------------------------------------------------------

    async def unload(self, reason: str = "request") -> str:
        """Drain in-flight requests (bounded), stop the runtime; returns the resulting status."""
        return await asyncio.shield(self._start_unload(reason))

    def _start_unload(self, reason: str) -> asyncio.Task[str]:
        if self._unload_task is None or self._unload_task.done():
            self._unload_task = asyncio.create_task(self._unload(reason), name=f"unload {self.api_id}")
            self._unload_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._unload_task

    async def _unload(self, reason: str) -> str:
        load = self._load_task
        if load is not None and not load.done():
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        async with self._lifecycle_lock:
            if self.state is ModelState.UNLOADED:
                return self.status
            was_failed = self.state is ModelState.FAILED
            self._move(Event.UNLOAD)
            before = await self._backend.observe(self.api_id)
            if not was_failed and self.in_flight:
                log.info(
                    "model %s: draining %d in-flight requests",
                    self.api_id,
                    self.in_flight,
                    extra={"model": self.api_id},
                )
                try:
                    await asyncio.wait_for(self._drained.wait(), self._settings.drain_grace_seconds)
                except TimeoutError:
                    log.warning(
                        "model %s: %d requests still running after %.0fs; stopping anyway",
                        self.api_id,
                        self.in_flight,
                        self._settings.drain_grace_seconds,
                        extra={"model": self.api_id},
                    )
            await self._backend.stop(self.api_id, self._settings.stop_grace_seconds)
            self.url = None
            self.error = None
            self._move(Event.STOPPED)
            self._metrics.model_memory.labels(model=self.api_id).set(0)
            self._metrics.model_unloads_total.labels(model=self.api_id, reason=reason).inc()
            log.info(
                "model %s unloaded (%s); runtime RSS before: %s bytes",
                self.api_id,
                reason,
                before.memory_bytes,
                extra={"model": self.api_id, "reason": reason, "rss_bytes_before": before.memory_bytes},
            )
            return self.status

    # -- monitoring -------------------------------------------------------------------------------

    async def check(self, now: float) -> None:
        """Periodic check: notice a runtime that died, unload an idle model, refresh memory."""
        if self.state is not ModelState.LOADED or self._lifecycle_lock.locked():
            return
        obs = await self._backend.observe(self.api_id)
        if not obs.running:
            await self._runtime_gone(obs)
            return
        if obs.memory_bytes is not None:
            self._metrics.model_memory.labels(model=self.api_id).set(obs.memory_bytes)
        busy = self.in_flight > 0 or self.waiting > 0
        if busy:
            # Long requests count as use for the whole time they run, not only when they start.
            self._note_used()
        idle_shared = None if obs.last_used is None else time.time() - obs.last_used
        if idle_unload_due(
            self.entry.idle_timeout, self.entry.pinned, busy, now - self.last_used, idle_shared
        ):
            log.info(
                "model %s idle for %.0fs; unloading",
                self.api_id,
                now - self.last_used if idle_shared is None else min(now - self.last_used, idle_shared),
                extra={"model": self.api_id},
            )
            # In the background: a slow runtime exit must not hold up the checks of other models.
            self._start_unload("idle")

    async def _runtime_gone(self, obs: BackendObservation) -> None:
        if obs.failed or obs.message:
            await self.mark_crashed(obs.message or "the runtime exited")
            return
        # Stopped on purpose by someone else (another router replica's idle unload, `kubectl scale`):
        # not a failure; the next request loads it again.
        async with self._lifecycle_lock:
            if self.state is not ModelState.LOADED:
                return
            self.url = None
            self._move(Event.UNLOAD)
            self._move(Event.STOPPED)
            self._metrics.model_memory.labels(model=self.api_id).set(0)
            self._metrics.model_unloads_total.labels(model=self.api_id, reason="external").inc()
            log.info(
                "model %s: its runtime was stopped outside this router; now unloaded",
                self.api_id,
                extra={"model": self.api_id},
            )

    async def mark_crashed(self, message: str) -> None:
        """The runtime of a loaded model died: record why; the next request loads it again."""
        if self.state is not ModelState.LOADED:
            return
        self.error = message
        self.url = None
        self._move(Event.CRASHED)
        self._metrics.model_memory.labels(model=self.api_id).set(0)
        self._metrics.model_unloads_total.labels(model=self.api_id, reason="crash").inc()
        log.error("model %s: runtime died: %s", self.api_id, message, extra={"model": self.api_id})
        # Reap what is left (an exited process, a crash-looping pod) so a reload starts clean.
        async with self._lifecycle_lock:
            await self._backend.stop(self.api_id, self._settings.stop_grace_seconds)

    def cancel_background(self) -> None:
        """The router is stopping: drop a pending use record (the backend is about to close)."""
        if self._note_task is not None:
            self._note_task.cancel()

    def check_soon(self) -> None:
        """after_upstream_failure in the background (from a stream that cannot wait for it)."""
        task = asyncio.get_running_loop().create_task(self.after_upstream_failure())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def after_upstream_failure(self) -> None:
        """A request could not reach the runtime: find out whether it died."""
        if self.state is not ModelState.LOADED:
            return
        obs = await self._backend.observe(self.api_id)
        if not obs.running:
            await self._runtime_gone(obs)
