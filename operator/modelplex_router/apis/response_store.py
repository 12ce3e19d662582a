"""Recent Responses API answers, kept in memory so ``previous_response_id`` and ``GET`` /
``DELETE /v1/responses/{id}`` work.

Bounded three ways: a time to live, a number of responses and a number of bytes (the oldest go first).
Each response belongs to the key that created it: another key neither sees nor deletes it. The store
lives in this router process only: a restart loses it, and router replicas do not share it.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StoredResponse:
    owner: bytes
    response: dict[str, Any]
    """The Response object, as GET returns it."""
    conversation: list[dict[str, Any]]
    """Every turn up to and including this answer, as chat messages (instructions left out, as the API
    does not carry them over to a follow-up)."""
    stored_at: float = 0.0
    size: int = field(default=0)


class ResponseStore:
    def __init__(
        self, max_responses: int, max_bytes: int, ttl_seconds: float, clock: Callable[[], float] | None = None
    ) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self._clock = clock or time.monotonic
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def put(self, owner: bytes, response: dict[str, Any], conversation: list[dict[str, Any]]) -> bool:
        """Keep ``response`` for ``owner``; False when it alone is larger than the whole store."""
        entry = StoredResponse(owner, response, conversation, self._clock())
        entry.size = len(json.dumps(response)) + len(json.dumps(conversation))
        if entry.size > self.max_bytes:
            return False
        self._drop(response["id"])
        self._entries[response["id"]] = entry
        self.bytes += entry.size
        self._expire()
        while len(self._entries) > self.max_responses or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def get(self, owner: bytes, response_id: str) -> StoredResponse | None:
        """The response, when it is still kept and ``owner`` created it."""
        self._expire()
        entry = self._entries.get(response_id)
        return entry if entry is not None and entry.owner == owner else None

    def delete(self, owner: bytes, response_id: str) -> bool:
        if self.get(owner, response_id) is None:
            return False
        self._drop(response_id)
        return True

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry.size

    def _expire(self) -> None:
        # Every entry has the same time to live, so the oldest (first) expire first.
        cutoff = self._clock() - self.ttl
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.stored_at > cutoff:
                return
            self._drop(oldest.response["id"])
