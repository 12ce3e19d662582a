"""Why a runtime stopped: the one line it writes on stderr before exiting, for its supervisor to read.

A runtime that cannot go on (its configuration is invalid, its model failed to load, its engine died)
writes, as the last thing it says about it, one line::

    modelplex-runtime-failure {"stage": "load", "reason": "OSError: ... config.json ... is not valid JSON"}

``stage`` is ``config``, ``load`` or ``serve``; ``reason`` is one line a user can act on. The router
(local backend) reads it from the process's stderr instead of guessing from the last log line (which
is the server's shutdown chatter). On Kubernetes the runtime also writes ``reason`` to the container's
termination message file, so the pod's ``lastState.terminated.message`` carries it too.

Both sides import this module (it needs only the standard library), so the format lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MARKER = "modelplex-runtime-failure "
STAGES = ("config", "load", "serve")


@dataclass(frozen=True, slots=True)
class FailureReport:
    stage: str
    reason: str


def one_line(text: str) -> str:
    return " ".join(text.split())


def encode_failure(stage: str, reason: str) -> str:
    """The line to write (without the newline)."""
    if stage not in STAGES:
        raise ValueError(f"unknown failure stage {stage!r}; one of {', '.join(STAGES)}")
    return MARKER + json.dumps({"stage": stage, "reason": one_line(reason)}, ensure_ascii=False)


def decode_failure(line: str) -> FailureReport | None:
    """The report a line carries; None for every other line (including a malformed report)."""
    start = line.find(MARKER)
    if start < 0:
        return None
    try:
        body = json.loads(line[start + len(MARKER) :])
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    stage, reason = body.get("stage"), body.get("reason")
    if not isinstance(stage, str) or not isinstance(reason, str) or not reason:
        return None
    return FailureReport(stage, reason)
