"""Reading the events of a streamed answer, one per API; pure, shared by the sync and async clients.

A reader takes one server-sent event (its name and data) and returns the chunks it gives the caller
and whether the stream is complete. Errors inside a stream raise the SDK's typed errors:

* chat and text completions: ``data: [DONE]`` ends the stream; an ``{"error": ...}`` event raises;
* the Responses API: ``response.completed`` or ``response.incomplete`` ends it, ``response.failed``
  (and an ``error`` event) raise;
* the Messages API: ``message_stop`` ends it, ``ping`` events are skipped, an ``error`` event raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from modelplex.errors import InvalidResponseError, error_from_stream_chunk, error_from_stream_failure

STREAM_DONE = "[DONE]"

StreamReader = Callable[[str, str], tuple[list[dict[str, Any]], bool]]
"""(event name, data) -> (chunks for the caller, whether the stream is complete)."""


def _object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise InvalidResponseError(f"the stream sent something that is not JSON: {data[:200]!r}") from None
    if not isinstance(value, dict):
        raise InvalidResponseError(f"the stream sent something that is not a JSON object: {data[:200]!r}")
    return value


def is_stream_end(data: str) -> bool:
    return data.strip() == STREAM_DONE


def stream_chunks(data: str) -> list[dict[str, Any]]:
    """The chunk in one SSE ``data:`` payload (none for an empty one); an ``error`` event raises."""
    if not data:
        return []
    chunk = _object(data)
    if "error" in chunk:
        raise error_from_stream_chunk(chunk)
    return [chunk]


def read_chat_event(_name: str, data: str) -> tuple[list[dict[str, Any]], bool]:
    if is_stream_end(data):
        return [], True
    return stream_chunks(data), False


def read_response_event(_name: str, data: str) -> tuple[list[dict[str, Any]], bool]:
    if not data:
        return [], False
    event = _object(data)
    kind = event.get("type")
    if kind == "response.failed":
        response = event.get("response") if isinstance(event.get("response"), Mapping) else {}
        error = response.get("error") if isinstance(response.get("error"), Mapping) else {}
        raise error_from_stream_failure(str(error.get("message") or "the response failed"), error.get("code"), event)
    if kind == "error":
        raise error_from_stream_failure(str(event.get("message") or "the stream failed"), event.get("code"), event)
    return [event], kind in ("response.completed", "response.incomplete")


def read_message_event(name: str, data: str) -> tuple[list[dict[str, Any]], bool]:
    if name == "ping" or not data:
        return [], False
    event = _object(data)
    if name == "error" or event.get("type") == "error":
        error = event.get("error") if isinstance(event.get("error"), Mapping) else {}
        raise error_from_stream_failure(str(error.get("message") or "the stream failed"), error.get("type"), event)
    return [event], event.get("type") == "message_stop"


def chunk_text(chunk: Mapping[str, Any]) -> str:
    """The text a streamed chunk adds: a chat or completion chunk, a Responses ``output_text`` delta or
    a Messages ``text_delta`` (empty for everything else: roles, usage, tool calls, ...)."""
    if chunk.get("type") == "response.output_text.delta":
        return chunk.get("delta") if isinstance(chunk.get("delta"), str) else ""
    delta = chunk.get("delta")
    if chunk.get("type") == "content_block_delta" and isinstance(delta, Mapping):
        return delta.get("text") if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) else ""
    parts: list[str] = []
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        delta = choice.get("delta")
        if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
            parts.append(delta["content"])
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)
