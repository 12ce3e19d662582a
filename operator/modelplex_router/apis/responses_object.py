"""The Response object of the Responses API, and its output items, built from a chat completion."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelplex_router.apis import responses_request as rr
from modelplex_router.apis.chat import ChatReply, new_id
from modelplex_router.apis.response_store import ResponseStore
from modelplex_router.auth import Principal
from modelplex_router.errors import RouterError


def owner_of(principal: Principal) -> bytes:
    """Whose stored responses these are: the key (its digest), or everyone when no keys are set."""
    return principal.digest or principal.name.encode()


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def outcome(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """A chat finish reason as the Response's status and incomplete_details."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def error_code(err: RouterError) -> str:
    """A Response's ``error.code`` (the API allows a fixed set; ours are rate limits or server errors)."""
    return "rate_limit_exceeded" if err.status_code == 429 else "server_error"


def assistant_message(reply: ChatReply) -> dict[str, Any]:
    """The answer as the chat message a follow-up turn replays."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    return message


@dataclass
class ResponseFrame:
    """One Response's fixed fields (from its request) and what it takes to finish and store it."""

    request: rr.ResponsesRequest
    model: str
    conversation: list[dict[str, Any]]
    """The turns before this answer (history and this input), for the store."""
    store: ResponseStore | None
    owner: bytes
    id: str = field(default_factory=lambda: new_id("resp_"))
    clock: Callable[[], float] = time.time
    created_at: int = 0

    def __post_init__(self) -> None:
        self.created_at = self.created_at or int(self.clock())

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage_: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        req = self.request
        tools = [t.model_dump(exclude_none=True) for t in req.tools or ()]
        choice = req.tool_choice
        text = req.text.model_dump(exclude_none=True, by_alias=True) if req.text and req.text.format else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(self.clock()) if status == "completed" else None,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "store": self.store is not None,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": text or {"format": {"type": "text"}},
            "tool_choice": choice.model_dump() if isinstance(choice, rr.NamedFunction) else choice or "auto",
            "tools": tools,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": "disabled",
            "usage": usage_,
            "user": req.user,
            "safety_identifier": req.safety_identifier,
            "metadata": req.metadata or {},
        }

    def finished(self, reply: ChatReply, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The final Response for ``reply`` (kept in the store when asked)."""
        status, incomplete = outcome(reply.finish_reason)
        response = self.response(
            status, output, usage(reply.prompt_tokens, reply.completion_tokens), incomplete=incomplete
        )
        if self.store is not None:
            self.store.put(self.owner, response, [*self.conversation, assistant_message(reply)])
        return response

    def failed(self, err: RouterError, output: list[dict[str, Any]]) -> dict[str, Any]:
        error = {"code": error_code(err), "message": err.message}
        return self.response("failed", output, error=error)


def output_items(reply: ChatReply) -> list[dict[str, Any]]:
    """A whole answer's output: its text as a message (always one, even empty), then its tool calls."""
    items: list[dict[str, Any]] = []
    status, _ = outcome(reply.finish_reason)
    if reply.text or not reply.tool_calls:
        items.append(message_item(new_id("msg_"), reply.text, status))
    for call in reply.tool_calls:
        items.append(function_call_item(new_id("fc_"), call.call_id, call.name, call.arguments, "completed"))
    return items
