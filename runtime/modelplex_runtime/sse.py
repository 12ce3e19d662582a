"""Server-sent events framing, as OpenAI streams it."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"

_TEXT = "\x00text\x00"
_FINISH = "\x00finish\x00"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(payload).encode() + b"\n\n"


class ChunkFrames:
    """The SSE frames of one streamed response, encoded once: per token only the text and the finish
    reason change, so each frame is two splices instead of a JSON encoding of the whole chunk.

    ``payload`` is a chunk with the placeholders ``ChunkFrames.TEXT`` and ``ChunkFrames.FINISH`` where
    the text and the finish reason go.
    """

    TEXT = _TEXT
    FINISH = _FINISH

    def __init__(self, payload: dict[str, Any]) -> None:
        encoded = "data: " + _dumps(payload) + "\n\n"
        head, rest = encoded.split(_dumps(_TEXT), 1)
        middle, tail = rest.split(_dumps(_FINISH), 1)
        self._head, self._middle, self._tail = head.encode(), middle.encode(), tail.encode()

    def frame(self, text: str, finish_reason: str | None = None) -> bytes:
        finish = b"null" if finish_reason is None else _dumps(finish_reason).encode()
        return self._head + _dumps(text).encode() + self._middle + finish + self._tail
