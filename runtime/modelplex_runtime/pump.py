"""Hand engine events to the event loop, one loop wake-up per burst instead of one per token."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any


class EventPump:
    """Thread-safe ``post(queue, item)``: items reach ``queue.put_nowait`` on the loop, in order.

    A decode step of a batch of N sequences posts N events; coalescing them into one
    ``call_soon_threadsafe`` saves N-1 self-pipe writes and loop wake-ups per step.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[tuple[asyncio.Queue[Any], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, queue: asyncio.Queue[Any], item: Any) -> None:
        with self._lock:
            self._pending.append((queue, item))
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for queue, item in items:
            queue.put_nowait(item)
