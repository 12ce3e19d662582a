"""Reading the runtime's chat completions, for the APIs translated from them: a whole answer, or a
stream as the pieces each translator needs (text, tool calls, finish, usage, failure).

Both the Responses and the Messages translators start from here, so the rules for what a chat
completion means (a tool call's id and name come before its arguments, usage comes last, ``[DONE]``
ends a stream, an ``{"error": ...}`` event ends it badly) live in one place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelplex_router.apis.sse import EventParser
from modelplex_router.errors import RouterError, StatusError, UpstreamError


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class ChatReply:
    """The parts of one chat completion the other APIs are built from."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | None = None
    """The stop string that ended the answer, when the engine says (vLLM's ``stop_reason``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UpstreamAnswerError(StatusError):
    """The runtime answered with an error (its status and message), or with something unreadable."""

    def __init__(self, status: int, message: str, code: str | None = None, error_type: str | None = None):
        super().__init__(status, message, error_type=error_type, code=code)


def chat_payload(
    model: str | None, messages: list[dict[str, Any]], stream: bool, **fields: Any
) -> dict[str, Any]:
    """A chat completion body: the fields that are set, and the usage chunk when it is streamed (the
    translated APIs report usage at the end of their streams)."""
    payload: dict[str, Any] = {"messages": messages}
    if model is not None:
        payload["model"] = model
    payload.update((name, value) for name, value in fields.items() if value is not None)
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def upstream_error(status: int, content: bytes) -> UpstreamAnswerError:
    """The runtime's error body (OpenAI-shaped, or anything else) as an error with its status."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or f"the runtime answered {status}")
        code = err.get("code")
        kind = err.get("type")
        return UpstreamAnswerError(status, message, str(code) if code else None, str(kind) if kind else None)
    text = content.decode("utf-8", errors="replace").strip()[:500]
    return UpstreamAnswerError(status, text or f"the runtime answered {status} with an empty body")


def _usage(reply: ChatReply, usage: Any) -> None:
    if isinstance(usage, dict):
        reply.prompt_tokens = _count(usage.get("prompt_tokens"))
        reply.completion_tokens = _count(usage.get("completion_tokens"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _stop_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("stop_reason")
    return reason if isinstance(reason, str) else None


def read_reply(content: bytes) -> ChatReply:
    """A non-streamed chat completion; UpstreamAnswerError (502) when it is not one."""
    try:
        body = json.loads(content)
        choice = body["choices"][0]
        message = choice["message"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        raise UpstreamAnswerError(502, "the runtime's answer is not a chat completion") from None
    reply = ChatReply(finish_reason=choice.get("finish_reason"), stop_reason=_stop_reason(choice))
    reply.text = message.get("content") or "" if isinstance(message, dict) else ""
    for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UpstreamAnswerError(502, "the runtime's answer has a tool call without a function name")
        arguments = function.get("arguments")
        reply.tool_calls.append(
            ToolCall(
                str(call.get("id") or new_id("call_")),
                function["name"],
                arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
            )
        )
    _usage(reply, body.get("usage"))
    return reply


# -- streams ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class ToolCallArguments:
    index: int
    fragment: str


@dataclass(frozen=True)
class StreamEnd:
    """The stream is complete: ``reply`` holds the whole answer (text, tool calls, finish, usage)."""

    reply: ChatReply


@dataclass(frozen=True)
class StreamFailure:
    error: RouterError


Piece = TextDelta | ToolCallStart | ToolCallArguments | StreamEnd | StreamFailure


@dataclass
class _PendingCall:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    started: bool = False


class ChatStreamTranslator:
    """A ``StreamTranslator`` over a ``ChatStreamReader``: an API's stream turns the pieces into its events."""

    def __init__(self) -> None:
        self.reader = ChatStreamReader()

    def feed(self, chunk: bytes) -> bytes:
        return self._events(self.reader.feed(chunk))

    def finish(self) -> bytes:
        return self._events(self.reader.finish())

    def fail(self, err: RouterError) -> bytes:
        return self._events(self.reader.fail(err))

    def refused(self, status: int, content: bytes) -> bytes:
        return self._events(self.reader.fail(upstream_error(status, content)))

    def _events(self, pieces: list[Piece]) -> bytes:
        raise NotImplementedError


class ChatStreamReader:
    """The runtime's chat-completion stream (bytes, split anywhere) as pieces, in order.

    A tool call is announced (``ToolCallStart``) once its name is known; argument fragments that came
    before it are held and follow it. After ``StreamEnd`` or ``StreamFailure`` nothing more comes.
    """

    def __init__(self) -> None:
        self._parser = EventParser()
        self._reply = ChatReply()
        self._calls: dict[int, _PendingCall] = {}
        self._text: list[str] = []
        self.ended = False

    def feed(self, chunk: bytes) -> list[Piece]:
        if self.ended:
            return []
        pieces: list[Piece] = []
        for event in self._parser.feed(chunk):
            pieces.extend(self._event(event.data))
            if self.ended:
                break
        return pieces

    def finish(self) -> list[Piece]:
        """The runtime's stream ended: without ``[DONE]`` that is a failure."""
        if self.ended:
            return []
        return self.fail(UpstreamError("the runtime's stream ended before the answer was complete"))

    def fail(self, error: RouterError) -> list[Piece]:
        if self.ended:
            return []
        self.ended = True
        return [StreamFailure(error)]

    def _event(self, data: str) -> Iterator[Piece]:
        if data.strip() == "[DONE]":
            yield from self._done()
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            yield from self.fail(
                UpstreamError(f"the runtime's stream sent something that is not JSON: {data[:100]!r}")
            )
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            message = str(err.get("message") or "the runtime's stream ended with an error")
            yield from self.fail(UpstreamAnswerError(502, message, err.get("code") and str(err["code"])))
            return
        _usage(self._reply, chunk.get("usage"))
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text.append(delta["content"])
                yield TextDelta(delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    yield from self._tool_delta(call)
        if choice.get("finish_reason") is not None:
            self._reply.finish_reason = str(choice["finish_reason"])
            self._reply.stop_reason = _stop_reason(choice)

    def _tool_delta(self, call: dict[str, Any]) -> Iterator[Piece]:
        index = call.get("index")
        index = index if isinstance(index, int) else len(self._calls)
        pending = self._calls.setdefault(index, _PendingCall())
        if isinstance(call.get("id"), str) and pending.call_id is None:
            pending.call_id = call["id"]
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if isinstance(function.get("name"), str) and function["name"] and pending.name is None:
            pending.name = function["name"]
        fragment = function.get("arguments") if isinstance(function.get("arguments"), str) else ""
        if fragment:
            pending.arguments.append(fragment)
        if pending.started:
            if fragment:
                yield ToolCallArguments(index, fragment)
            return
        if pending.name is None:
            return  # arguments before the name are held until it comes
        pending.started = True
        pending.call_id = pending.call_id or new_id("call_")
        yield ToolCallStart(index, pending.call_id, pending.name)
        for piece in pending.arguments:
            yield ToolCallArguments(index, piece)

    def _done(self) -> Iterator[Piece]:
        unnamed = [i for i, c in self._calls.items() if not c.started]
        if unnamed:
            yield from self.fail(UpstreamError("the runtime streamed a tool call without a function name"))
            return
        self.ended = True
        reply = self._reply
        reply.text = "".join(self._text)
        reply.tool_calls = [
            ToolCall(c.call_id or "", c.name or "", "".join(c.arguments))
            for _, c in sorted(self._calls.items())
        ]
        yield StreamEnd(reply)
