"""One replica of a model, as the requests sent to it see it: where it is, how busy, whether it is lost.

The coordinator's replica pool (``replica_pool.py``) makes an ``Endpoint`` for each ready replica the
backend reports and hands one to every request it lets through, so a request always knows which
runtime it talks to. ``outstanding`` counts the requests this router has on it (the routing policies
read it); ``draining`` means it takes no new request (scaled down, going away) while the ones running
finish. Every wait of a request on its runtime
goes through ``abortable``, which bounds it (the stall timeout) and ends it at once with a 503 when
the runtime is declared lost (it stopped answering its health checks: hung): ``lost`` then resolves
with the reason, instead of the requests waiting for bytes that will not come.

One ``asyncio.timeout`` scope per wait does both jobs; it costs less than a timeout on every socket
read and write inside httpx (measured: about 20 us per scope with a deadline, against 25 us more per
read or write for httpx's own, of which a request makes several).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from modelplex_router.errors import RuntimeUnresponsive
from modelplex_router.health import HealthTracker

T = TypeVar("T")


class Endpoint:
    def __init__(
        self, api_id: str, url: str, health_threshold: int, retry_after: int, replica_id: str = ""
    ) -> None:
        self.api_id = api_id
        self.url = url
        self.replica_id = replica_id or url
        self.outstanding = 0
        """Requests of this router on the replica now (``enter`` / ``leave``)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        """Takes no new request; dropped from the pool once ``outstanding`` is 0."""
        self.health = HealthTracker(health_threshold, checked_at=time.monotonic())
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_activity = time.monotonic()
        """When a byte last came from this runtime (relayed chunks, whole answers)."""
        self._retry_after = retry_after
        self._scopes: set[asyncio.Timeout] = set()
        self.lost.add_done_callback(self._abort_all)

    def note_activity(self) -> None:
        self.last_activity = time.monotonic()

    def mark_lost(self, reason: str) -> None:
        """The runtime is gone for its requests: every ``abortable`` wait on it ends with a 503."""
        if not self.lost.done():
            self.lost.set_result(reason)

    def enter(self) -> None:
        self.outstanding += 1
        self._idle.clear()

    def leave(self) -> None:
        self.outstanding -= 1
        if self.outstanding <= 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request of this router runs on the replica."""
        await self._idle.wait()

    @property
    def routable(self) -> bool:
        return not self.draining and not self.lost.done()

    def lost_error(self) -> RuntimeUnresponsive:
        reason = self.lost.result() if self.lost.done() else "the runtime was lost"
        return RuntimeUnresponsive(
            f"model {self.api_id!r}: {reason}; retry", headers={"Retry-After": str(self._retry_after)}
        )

    async def abortable(self, awaitable: Awaitable[T], stall_seconds: float | None = None) -> T:
        """Await ``awaitable``: TimeoutError after ``stall_seconds`` (a stall), RuntimeUnresponsive as
        soon as the runtime is declared lost."""
        if self.lost.done():
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise self.lost_error()
        try:
            # asyncio.timeout is the standard library's cancel scope: rescheduling it to "now" from the
            # lost callback cancels exactly this await and turns it into TimeoutError, nothing else.
            async with asyncio.timeout(stall_seconds) as scope:
                self._scopes.add(scope)
                try:
                    return await awaitable
                finally:
                    self._scopes.discard(scope)
        except TimeoutError:
            if self.lost.done():
                raise self.lost_error() from None
            raise

    def _abort_all(self, _lost: asyncio.Future[str]) -> None:
        now = asyncio.get_running_loop().time()
        for scope in list(self._scopes):
            with contextlib.suppress(RuntimeError):  # already left
                scope.reschedule(now)
