"""A chat-completion stream as the Responses API's streaming events.

The documented sequence: ``response.created``, ``response.in_progress``; per output item
``response.output_item.added``, for a message ``response.content_part.added``, the
``response.output_text.delta`` events, ``response.output_text.done``, ``response.content_part.done``;
for a function call the ``response.function_call_arguments.delta`` events and ``.done``; then
``response.output_item.done``; at the end ``response.completed`` (``response.incomplete`` when
``max_output_tokens`` cut the answer). Every event carries its ``sequence_number`` from 0. A failure
(load failed, runtime gone or erroring mid-answer, a stream cut short) ends it with
``response.failed``, after ``response.created`` if that was not sent yet.
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
from modelplex_router.apis.responses_object import (
    ResponseFrame,
    function_call_item,
    message_item,
    outcome,
    output_text,
)
from modelplex_router.errors import RouterError, UpstreamError


class _Item:
    """One output item while it streams."""

    def __init__(self, index: int, item: dict[str, Any], chat_index: int | None = None) -> None:
        self.index = index
        self.item = item
        self.chat_index = chat_index
        self.parts: list[str] = []
        self.result: dict[str, Any] | None = None
        """The item as its output_item.done event gave it."""

    @property
    def id(self) -> str:
        return self.item["id"]

    def final(self, status: str) -> dict[str, Any]:
        text = "".join(self.parts)
        if self.item["type"] == "message":
            return message_item(self.id, text, status)
        item = self.item
        return function_call_item(item["id"], item["call_id"], item["name"], text, status)


class ResponsesStream(ChatStreamTranslator):
    def __init__(self, frame: ResponseFrame) -> None:
        super().__init__()
        self.frame = frame
        self.sequence = 0
        self.started = False
        self.items: list[_Item] = []
        self.open: _Item | None = None
        self.final: dict[str, Any] | None = None

    # -- events ---------------------------------------------------------------------------------------

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(sse.frame({"type": kind, "sequence_number": self.sequence, **fields}, kind))
        self.sequence += 1

    def _events(self, pieces: list[Piece]) -> bytes:
        out: list[bytes] = []
        for piece in pieces:
            if self.final is not None:
                break
            if not self.started:
                self.started = True
                response = self.frame.response("in_progress", [])
                self._emit(out, "response.created", response=response)
                self._emit(out, "response.in_progress", response=response)
            if isinstance(piece, TextDelta):
                item = self._message(out)
                item.parts.append(piece.text)
                self._emit(
                    out,
                    "response.output_text.delta",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=0,
                    delta=piece.text,
                    logprobs=[],
                )
            elif isinstance(piece, ToolCallStart):
                self._close(out)
                item = function_call_item(new_id("fc_"), piece.call_id, piece.name, "", "in_progress")
                self._open(out, _Item(len(self.items), item, piece.index))
            elif isinstance(piece, ToolCallArguments):
                self._arguments(out, piece)
            elif isinstance(piece, StreamEnd):
                self._end(out, piece)
            elif isinstance(piece, StreamFailure):
                self._failed(out, piece.error)
        return b"".join(out)

    def _open(self, out: list[bytes], item: _Item) -> None:
        self.items.append(item)
        self.open = item
        self._emit(out, "response.output_item.added", output_index=item.index, item=item.item)

    def _message(self, out: list[bytes]) -> _Item:
        if self.open is not None and self.open.item["type"] == "message":
            return self.open
        self._close(out)
        item = _Item(len(self.items), {**message_item(new_id("msg_"), "", "in_progress"), "content": []})
        self._open(out, item)
        self._emit(
            out,
            "response.content_part.added",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            part=output_text(""),
        )
        return item

    def _arguments(self, out: list[bytes], piece: ToolCallArguments) -> None:
        item = self.open
        if item is None or item.chat_index != piece.index:
            # Chat streams send one tool call after the other; arguments for an earlier one cannot be
            # placed after its output_item.done.
            self.reader.ended = True
            self._failed(out, UpstreamError("the runtime interleaved the arguments of several tool calls"))
            return
        item.parts.append(piece.fragment)
        self._emit(
            out,
            "response.function_call_arguments.delta",
            item_id=item.id,
            output_index=item.index,
            delta=piece.fragment,
        )

    def _close(self, out: list[bytes], status: str = "completed") -> None:
        item, self.open = self.open, None
        if item is None:
            return
        item.result = final = item.final(status)
        if final["type"] == "message":
            text = final["content"][0]["text"]
            common = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            self._emit(out, "response.output_text.done", **common, text=text, logprobs=[])
            self._emit(out, "response.content_part.done", **common, part=output_text(text))
        else:
            self._emit(
                out,
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=item.index,
                name=final["name"],
                arguments=final["arguments"],
            )
        self._emit(out, "response.output_item.done", output_index=item.index, item=final)

    def _end(self, out: list[bytes], end: StreamEnd) -> None:
        status, _ = outcome(end.reply.finish_reason)
        if not self.items:
            self._message(out)  # an answer with no text and no tool call is still one (empty) message
        open_message = self.open is not None and self.open.item["type"] == "message"
        self._close(out, status if open_message else "completed")
        output = [item.result for item in self.items if item.result is not None]
        self.final = response = self.frame.finished(end.reply, output)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        self._emit(out, kind, response=response)

    def _failed(self, out: list[bytes], err: RouterError) -> None:
        output = [item.result or item.final("incomplete") for item in self.items]
        self.open = None
        self.final = response = self.frame.failed(err, output)
        self._emit(out, "response.failed", response=response)
