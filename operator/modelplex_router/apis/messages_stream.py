"""A chat-completion stream as the Anthropic Messages API's streaming events.

Anthropic's sequence: ``message_start`` (the Message with empty content), a ``ping``, then per content
block ``content_block_start``, its ``content_block_delta`` events (``text_delta`` for text,
``input_json_delta`` with the argument fragments for a ``tool_use``) and ``content_block_stop``; then
``message_delta`` (``stop_reason``, ``stop_sequence`` and the usage) and ``message_stop``. Each event
is sent with its name (``event: ...``), as Anthropic's clients read it. The input token count is only
known at the end: ``message_start`` says 0 and ``message_delta`` carries it (clients take the later
value). A failure ends the stream with an ``error`` event in Anthropic's error shape.
"""

from __future__ import annotations

from typing import Any

from modelplex_router.apis import sse
from modelplex_router.apis.chat import (
    ChatStreamTranslator,
    Piece,
    StreamEnd,
    StreamFailure,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    new_id,
)
from modelplex_router.apis.messages_object import ANTHROPIC_ERRORS, message_shell, stop_reason
from modelplex_router.errors import RouterError, UpstreamError


class MessagesStream(ChatStreamTranslator):
    def __init__(self, model: str, stop_sequences: list[str] | None) -> None:
        super().__init__()
        self.model = model
        self.stop_sequences = stop_sequences
        self.started = False
        self.blocks = 0
        self.open: tuple[str, int | None] | None = None
        """The open block: ("text", None) or ("tool_use", the chat tool-call index)."""
        self.ended = False

    # -- events ---------------------------------------------------------------------------------------

    def _events(self, pieces: list[Piece]) -> bytes:
        out: list[bytes] = []
        for piece in pieces:
            if self.ended:
                break
            if isinstance(piece, StreamFailure):
                self._error(out, piece.error)
                continue
            if not self.started:
                self.started = True
                out.append(
                    sse.frame(
                        {"type": "message_start", "message": message_shell(new_id("msg_"), self.model)},
                        "message_start",
                    )
                )
                out.append(sse.frame({"type": "ping"}, "ping"))
            if isinstance(piece, TextDelta):
                if self.open is None or self.open[0] != "text":
                    self._start(out, ("text", None), {"type": "text", "text": ""})
                self._delta(out, {"type": "text_delta", "text": piece.text})
            elif isinstance(piece, ToolCallStart):
                block = {"type": "tool_use", "id": piece.call_id, "name": piece.name, "input": {}}
                self._start(out, ("tool_use", piece.index), block)
            elif isinstance(piece, ToolCallArguments):
                if self.open != ("tool_use", piece.index):
                    self._error(
                        out, UpstreamError("the runtime interleaved the arguments of several tool calls")
                    )
                    continue
                self._delta(out, {"type": "input_json_delta", "partial_json": piece.fragment})
            elif isinstance(piece, StreamEnd):
                self._end(out, piece)
        return b"".join(out)

    def _start(self, out: list[bytes], block: tuple[str, int | None], content: dict[str, Any]) -> None:
        self._stop(out)
        self.open = block
        out.append(
            sse.frame(
                {"type": "content_block_start", "index": self.blocks, "content_block": content},
                "content_block_start",
            )
        )

    def _delta(self, out: list[bytes], delta: dict[str, Any]) -> None:
        out.append(
            sse.frame(
                {"type": "content_block_delta", "index": self.blocks, "delta": delta}, "content_block_delta"
            )
        )

    def _stop(self, out: list[bytes]) -> None:
        if self.open is None:
            return
        out.append(sse.frame({"type": "content_block_stop", "index": self.blocks}, "content_block_stop"))
        self.open = None
        self.blocks += 1

    def _end(self, out: list[bytes], end: StreamEnd) -> None:
        if self.blocks == 0 and self.open is None:
            self._start(out, ("text", None), {"type": "text", "text": ""})  # never a message without content
        self._stop(out)
        reply = end.reply
        reason, sequence = stop_reason(reply, self.stop_sequences)
        usage = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        out.append(sse.frame({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta"))
        out.append(sse.frame({"type": "message_stop"}, "message_stop"))
        self.ended = True

    def _error(self, out: list[bytes], err: RouterError) -> None:
        self.reader.ended = True
        self.ended = True
        out.append(ANTHROPIC_ERRORS.event(err))
