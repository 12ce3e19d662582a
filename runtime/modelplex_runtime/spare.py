"""The spare-runtime hand-off: a runtime started ahead of time learns its model from one line on stdin.

The router (local backend) keeps a spare runtime that has already imported torch and rehearsed a load
(``modelplex_runtime.engine.prewarm``). When a model is needed it writes one JSON object and a newline
to the spare's stdin::

    {"model": {<one config-file model entry>}, "served_model_name": "llama", "port": 41234}

and the process goes on exactly as if it had been started with ``--model-json``/``--port``. No HTTP
endpoint is involved, so a spare cannot be handed a model by anything but its parent. EOF on stdin
(the parent went away) ends the spare. Once warm, the spare prints ``READY_LINE`` on stdout, so the
parent can tell a warm spare from one still importing.
"""

from __future__ import annotations

import json
from typing import IO, Any

from modelplex_runtime.settings import RuntimeSettings

READY_LINE = "modelplex-spare-ready"


class AssignmentError(ValueError):
    """The line on stdin is not a valid assignment; ``str(exc)`` says why."""


def encode_assignment(model: dict[str, Any], served_model_name: str, port: int | None = None) -> bytes:
    """The line a parent writes to hand a spare its model."""
    body: dict[str, Any] = {"model": model, "served_model_name": served_model_name}
    if port is not None:
        body["port"] = port
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def apply_assignment(settings: RuntimeSettings, line: bytes) -> RuntimeSettings:
    """The settings of a runtime serving the assigned model (the model entry itself is checked later)."""
    try:
        body = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"the assignment on stdin is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("model"), dict):
        raise AssignmentError("the assignment on stdin needs a 'model' object (one model entry)")
    update: dict[str, Any] = {"model_json": json.dumps(body["model"]), "model_file": None, "spare": False}
    name = body.get("served_model_name")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise AssignmentError("'served_model_name' must be a non-empty string")
        update["served_model_name"] = name
    port = body.get("port")
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise AssignmentError("'port' must be an integer from 0 to 65535")
        update["port"] = port
    return RuntimeSettings.model_validate({**settings.model_dump(), **update})


def read_assignment(stream: IO[bytes]) -> bytes | None:
    """Block until the parent writes the assignment line; None at EOF (the parent is gone)."""
    line = stream.readline()
    return line if line.strip() else None
