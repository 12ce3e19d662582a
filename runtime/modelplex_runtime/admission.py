"""The runtime's own bound on work it holds: past it, a request gets 429 with Retry-After at once.

The router holds requests for a model that is loading in its own queue and sends them on when the
runtime is ready, so the bound here is on the runtime's admission only: size it (``--max-waiting-requests``,
default 1024) above the router's ``max_waiting_per_model`` (256) so a released burst is taken whole.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from modelplex_runtime.errors import APIError


@dataclass
class Ticket:
    gate: AdmissionGate
    weight: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._give_back(self.weight)


class AdmissionGate:
    """At most ``limit`` sequences held at once (generating, or waiting for a place in the batch)."""

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def admit(self, weight: int = 1) -> Ticket:
        """A ticket for ``weight`` sequences (a request's prompts x n), or a 429 when they do not fit."""
        with self._lock:
            if self._held and self._held + weight > self.limit:
                raise APIError(429, f"the runtime already holds {self._held} sequences (its limit is "
                               f"{self.limit}); retry in {self.retry_after} s",
                               type="rate_limit_error", code="queue_full", retry_after=self.retry_after)
            self._held += weight
        return Ticket(self, weight)

    def _give_back(self, weight: int) -> None:
        with self._lock:
            self._held -= weight
