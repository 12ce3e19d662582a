"""Hand engine events to the event loop: one loop wake-up per burst, and at most one per interval."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class EventPump:
    """Thread-safe ``post(queue, item)``: items reach ``queue.put_nowait`` on the loop, in order.

    A decode step of a batch of N sequences posts N events; coalescing them into one
    ``call_soon_threadsafe`` saves N-1 self-pipe writes and loop wake-ups per step.

    With an ``interval`` (seconds), ordinary items are delivered at most once per interval, so a
    stream's tokens from several short decode steps go out as one chunk. Every chunk costs the server
    and its client HTTP work on the cores the model uses; below a reader's notice (tens of ms) fewer,
    larger chunks buy throughput. ``urgent`` items (a first token, a finish) go at once and take
    everything pending with them, so time to first token and end-to-end latency do not change.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._clock = clock
        self._pending: deque[tuple[asyncio.Queue[Any], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a delivery is on its way (now or at the interval's end)
        self._immediate = False  # ... and it is an immediate one
        self._last = float("-inf")

    def post(self, queue: asyncio.Queue[Any], item: Any, urgent: bool = False) -> None:
        with self._lock:
            self._pending.append((queue, item))
            if self._immediate or (self._scheduled and not urgent):
                return
            wait = 0.0 if urgent else self._last + self._interval - self._clock()
            self._scheduled = True
            self._immediate = wait <= 0
        if wait <= 0:
            self._loop.call_soon_threadsafe(self._drain)
        else:
            self._loop.call_soon_threadsafe(self._loop.call_later, wait, self._drain)

    def _drain(self) -> None:
        with self._lock:
            if not self._pending:
                return  # an earlier delivery (an urgent one overtook a delayed one) took these
            items = list(self._pending)
            self._pending.clear()
            self._scheduled = self._immediate = False
            self._last = self._clock()
        for queue, item in items:
            queue.put_nowait(item)
