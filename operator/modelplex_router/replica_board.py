"""Where a backend publishes each model's ``Replicas`` and the router waits for them to change.

Both backends keep their view here (the local one from its processes, the Kubernetes one from its
Deployment and EndpointSlice watches), so ``replicas`` and ``replicas_changed`` mean exactly the same
on both. A publish that changes nothing keeps the version; every real change takes a new one (from one
counter, so a version is never reused, not even after a model was stopped and started again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable

from modelplex_router.backend import Replica, Replicas


class ReplicaBoard:
    def __init__(self) -> None:
        self._sets: dict[str, Replicas] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._versions = itertools.count(1)

    def get(self, api_id: str) -> Replicas:
        return self._sets.get(api_id) or Replicas()

    def publish(
        self, api_id: str, *, desired: int | None = None, members: Iterable[Replica] | None = None
    ) -> Replicas:
        """Replace the desired count and/or the members; wakes the waiters when anything changed."""
        old = self.get(api_id)
        new_desired = old.desired if desired is None else desired
        new_members = old.members if members is None else tuple(sorted(members, key=lambda r: r.id))
        if new_desired == old.desired and new_members == old.members:
            return old
        current = Replicas(new_desired, new_members, next(self._versions))
        self._sets[api_id] = current
        event = self._events.pop(api_id, None)
        if event is not None:
            event.set()
        return current

    async def changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        """The replicas once their version is past ``version``; unchanged after ``timeout_seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_seconds)
        while (current := self.get(api_id)).version <= version:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return current
            event = self._events.setdefault(api_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return current
