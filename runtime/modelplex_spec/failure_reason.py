"""Why a runtime process ended, from what it wrote (pure: the router's local backend feeds it lines as
they come; on Kubernetes the router and the operator feed it a crashed container's termination message,
``pod_status``).

In order of trust:

1. the runtime's own report, one marked line (``modelplex_spec.failure``: our runtime writes it when
   its configuration is invalid, its model fails to load or it cannot go on);
2. what the engine's own reader of its output found (``Engine.output_reader()`` in
   ``modelplex_spec.engines``: engines whose server we do not write, vLLM, say why they failed in their own
   words, spread over several processes' tracebacks; the engine's module knows how to read them);
3. the last line that names an exception (``SomeError: message``, the end of a traceback);
4. the last line that is not the server's shutdown chatter ("Finished server process ...").

``describe_exit`` turns that and the exit status into the one line users see.
"""

from __future__ import annotations

import collections
import json
import re
import signal

from modelplex_spec.engines import OutputReader
from modelplex_spec.failure import decode_failure

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
    """The part of a runtime's output that explains its end."""

    def __init__(self, engine_reader: OutputReader | None = None, keep: int = 20) -> None:
        self._engine_reader = engine_reader
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self.report: str | None = None
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
        if self._engine_reader is not None:
            self._engine_reader.feed(line)
        text, level = _text(line)
        if _EXCEPTION_LINE.match(text) or (level in ("ERROR", "CRITICAL") and text):
            self._error = text

    def reason(self) -> str | None:
        """The best explanation so far; None when the runtime said nothing useful."""
        engine_reason = self._engine_reader.reason() if self._engine_reader is not None else None
        if self.report or engine_reason or self._error:
            return self.report or engine_reason or self._error
        for line in reversed(self.tail):
            text, _ = _text(line)
            if text and not text.startswith(_CHATTER):
                return text
        return None


def describe_exit(returncode: int | None, reason: str | None, who: str = "the runtime") -> str:
    """One line: how the runtime ended and why, e.g. "the runtime exited with code 1: OSError: ..."
    (``who``: the engine's name for its process, e.g. "vLLM")."""
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
    return f"{who} {how}: {reason}" if reason else f"{who} {how}"
