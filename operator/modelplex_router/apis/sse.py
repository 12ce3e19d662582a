"""Server-sent events, both ways: an incremental parser for the runtime's bytes (split anywhere) and
the writer for the events we send.

The parser follows the SSE rules the runtimes use: lines end in LF, CRLF or CR; ``:`` starts a
comment; ``data:`` lines of one event are joined with LF; a blank line ends the event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    data: str
    event: str | None = None


class EventParser:
    """Feed it bytes as they arrive; it returns the events that are complete so far."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while True:
            line, found = self._next_line()
            if not found:
                return events
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _next_line(self) -> tuple[bytes, bool]:
        buffer = self._buffer
        lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
        if cr < 0 or 0 <= lf < cr:
            if lf < 0:
                return b"", False
            self._buffer = buffer[lf + 1 :]
            return buffer[:lf], True
        if cr + 1 == len(buffer):
            return b"", False  # a CR at the end may be the first half of CRLF: wait for more
        end = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
        self._buffer = buffer[end:]
        return buffer[:cr], True

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data and self._event is None:
                return None
            event = Event("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    @property
    def pending(self) -> bool:
        """Bytes or lines of an event that never ended."""
        return bool(self._buffer.strip() or self._data)


def frame(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One event: ``event: NAME`` (when given) and the payload as one ``data:`` line."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data
