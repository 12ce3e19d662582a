"""Whether an engine's thread is alive and making progress: what /health (the pod's liveness probe) reports.

The thread marks itself idle when it waits for work, busy when it takes some, and beats after each unit
(a decode step, a prefill, an embedding forward). Busy without a beat for ``stall_seconds`` is wedged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

STALL_SECONDS = 120.0


class Heartbeat:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy = False
        self._last = clock()

    def idle(self) -> None:
        self._busy = False
        self._last = self._clock()

    def busy(self) -> None:
        if not self._busy:
            self._busy = True
            self._last = self._clock()

    def beat(self) -> None:
        self._last = self._clock()

    def problem(self, thread: threading.Thread, stall_seconds: float = STALL_SECONDS) -> str | None:
        """None when healthy, else why not."""
        if not thread.is_alive():
            return f"the engine thread {thread.name!r} has died"
        stalled = self._clock() - self._last
        if self._busy and stalled > stall_seconds:
            return f"the engine thread {thread.name!r} has made no progress for {stalled:.0f} s"
        return None
