"""Why a runtime process ended, from what it wrote on stderr (pure; the local backend feeds it lines).

In order of trust:

1. the runtime's own report, one marked line (``modelplex_spec.failure``: our runtime writes it when
   its configuration is invalid, its model fails to load or it cannot go on);
2. a line an engine-specific reader recognises as the cause (``Extractor``: a function from one line
   to the reason it states, or None). Engines whose server we do not write (vLLM) say why they failed
   in their own words; their reader is registered in ``ENGINE_EXTRACTORS`` under the engine's name;
3. the last line that names an exception (``SomeError: message``, the end of a traceback);
4. the last line that is not the server's shutdown chatter ("Finished server process ...").

``describe_exit`` turns that and the exit status into the one line users see.
"""

from __future__ import annotations

import collections
import json
import re
import signal
from collections.abc import Callable, Sequence

from modelplex_spec.failure import decode_failure

Extractor = Callable[[str], str | None]
"""One stderr line -> the failure reason it states, or None."""

ENGINE_EXTRACTORS: dict[str, tuple[Extractor, ...]] = {}
"""Engine name (``ModelEntry.engine``) -> the readers for that engine's own output."""

_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?")
_CHATTER = (
    "Finished server process",
    "Waiting for application shutdown",
    "Application shutdown complete",
    "Shutting down",
    "Waiting for connections to close",
    "Started server process",
    "Waiting for application startup",
    "Application startup complete",
)


def extractors_for(engine: str | None) -> tuple[Extractor, ...]:
    return ENGINE_EXTRACTORS.get(engine or "", ())


def _text(line: str) -> tuple[str, str | None]:
    """A JSON log line's message and level; any other line as it is."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except ValueError:
            return stripped, None
        if isinstance(record, dict) and isinstance(record.get("message"), str):
            level = record.get("level") or record.get("levelname")
            message = record["message"]
            exc = record.get("exc_info")
            if isinstance(exc, str) and exc.strip():
                message = f"{message}: {exc.strip().splitlines()[-1]}"
            return message, level if isinstance(level, str) else None
    return stripped, None


class RuntimeOutput:
    """The part of a runtime's stderr that explains its end."""

    def __init__(self, extractors: Sequence[Extractor] = (), keep: int = 20) -> None:
        self._extractors = tuple(extractors)
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.report: str | None = None
        self.engine_reason: str | None = None
        self._error: str | None = None

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        self.tail.append(line)
        report = decode_failure(line)
        if report is not None:
            self.report = report.reason
            return
        for extract in self._extractors:
            reason = extract(line)
            if reason:
                self.engine_reason = reason
                return
        text, level = _text(line)
        if _EXCEPTION_LINE.match(text) or (level in ("ERROR", "CRITICAL") and text):
            self._error = text

    def reason(self) -> str | None:
        """The best explanation so far; None when the runtime said nothing useful."""
        if self.report or self.engine_reason or self._error:
            return self.report or self.engine_reason or self._error
        for line in reversed(self.tail):
            text, _ = _text(line)
            if text and not text.startswith(_CHATTER):
                return text
        return None


def describe_exit(returncode: int | None, reason: str | None) -> str:
    """One line: how the runtime ended and why, e.g. "the runtime exited with code 1: OSError: ..."."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"was killed by signal {-returncode} ({name}" + (
            ": out of memory, or killed by someone)" if -returncode == signal.SIGKILL else ")"
        )
    else:
        how = f"exited with code {returncode}"
    return f"the runtime {how}: {reason}" if reason else f"the runtime {how}"
