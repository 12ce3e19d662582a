"""The Message object of the Anthropic Messages API, and its errors, built from a chat completion."""

from __future__ import annotations

import json
from typing import Any

from modelplex_router.answer import SafeJSONResponse
from modelplex_router.apis import sse
from modelplex_router.apis.chat import ChatReply, UpstreamAnswerError, new_id
from modelplex_router.errors import RouterError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


class AnthropicErrors:
    def response(self, err: RouterError) -> SafeJSONResponse:
        return SafeJSONResponse(
            error_body(err.status_code, err.message), status_code=err.status_code, headers=err.headers
        )

    def event(self, err: RouterError) -> bytes:
        return sse.frame(error_body(err.status_code, err.message), "error")


ANTHROPIC_ERRORS = AnthropicErrors()


def error_answer(err: UpstreamAnswerError) -> tuple[int, bytes, str]:
    return err.status_code, json.dumps(error_body(err.status_code, err.message)).encode(), "application/json"


def stop_reason(reply: ChatReply, stop_sequences: list[str] | None) -> tuple[str, str | None]:
    """The chat finish reason as Anthropic's ``stop_reason`` and ``stop_sequence``."""
    if reply.tool_calls:
        return "tool_use", None
    if reply.finish_reason == "length":
        return "max_tokens", None
    if reply.finish_reason == "content_filter":
        return "refusal", None
    if reply.stop_reason is not None and reply.stop_reason in (stop_sequences or ()):
        return "stop_sequence", reply.stop_reason
    return "end_turn", None


def tool_input(arguments: str, name: str) -> dict[str, Any]:
    """A tool call's arguments as the ``input`` object of a ``tool_use`` block."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamAnswerError(
            502, f"the model called {name!r} with arguments that are not a JSON object: {arguments[:200]!r}"
        )
    return value


def usage(reply: ChatReply) -> dict[str, int]:
    return {
        "input_tokens": reply.prompt_tokens,
        "output_tokens": reply.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message_shell(message_id: str, model: str) -> dict[str, Any]:
    """The Message before its content: what ``message_start`` carries."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def message_object(model: str, reply: ChatReply, stop_sequences: list[str] | None) -> dict[str, Any]:
    message = message_shell(new_id("msg_"), model)
    content: list[dict[str, Any]] = message["content"]
    if reply.text or not reply.tool_calls:
        content.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.call_id,
                "name": call.name,
                "input": tool_input(call.arguments, call.name),
            }
        )
    message["stop_reason"], message["stop_sequence"] = stop_reason(reply, stop_sequences)
    message["usage"] = usage(reply)
    return message
