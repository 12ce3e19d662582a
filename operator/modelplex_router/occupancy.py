"""Who is using one model right now: requests in flight and waiting, the last use, the drain signal.

The coordinator counts requests here as it admits and releases them; unloading waits on ``drained``,
the monitor reads ``busy`` and ``last_used`` for idle decisions. With several router replicas sharing
the runtimes (Kubernetes), each use is also recorded through the backend's ``UsageRecorder`` in the
background, so the other replicas do not idle-unload a model this one is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from modelplex_router.backend import UsageRecorder
from modelplex_router.metrics import RouterMetrics

log = logging.getLogger("modelplex_router.lifecycle")


class Occupancy:
    def __init__(self, api_id: str, metrics: RouterMetrics, usage: UsageRecorder | None) -> None:
        self.api_id = api_id
        self.in_flight = 0
        self.waiting = 0
        self.last_used = time.monotonic()
        self._metrics = metrics
        self._usage = usage
        self._note_task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        metrics.requests_waiting.labels(model=api_id).set(0)
        metrics.requests_in_flight.labels(model=api_id).set(0)

    @property
    def busy(self) -> bool:
        """Requests in flight or waiting for a load."""
        return self.in_flight > 0 or self.waiting > 0

    @contextlib.contextmanager
    def waiting_for_load(self) -> Iterator[None]:
        self.waiting += 1
        self._metrics.requests_waiting.labels(model=self.api_id).set(self.waiting)
        try:
            yield
        finally:
            self.waiting -= 1
            self._metrics.requests_waiting.labels(model=self.api_id).set(self.waiting)

    def enter(self) -> None:
        self.in_flight += 1
        self._drained.clear()
        self.last_used = time.monotonic()
        self._metrics.requests_in_flight.labels(model=self.api_id).set(self.in_flight)
        self.note_used()

    def leave(self) -> None:
        self.in_flight -= 1
        self.last_used = time.monotonic()
        self._metrics.requests_in_flight.labels(model=self.api_id).set(self.in_flight)
        if self.in_flight == 0:
            self._drained.set()
        # The end of a long request is a use too: other replicas time their idle unload from it.
        self.note_used()

    async def drained(self, grace_seconds: float) -> bool:
        """Wait (at most ``grace_seconds``) until no request is in flight; False when some still are."""
        try:
            await asyncio.wait_for(self._drained.wait(), grace_seconds)
        except TimeoutError:
            return False
        return True

    def note_used(self) -> None:
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

    def cancel_background(self) -> None:
        """The router is stopping: drop a pending use record (the backend is about to close)."""
        if self._note_task is not None:
            self._note_task.cancel()
