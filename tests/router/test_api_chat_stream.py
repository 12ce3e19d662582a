"""The SSE parser and the chat-stream reader that both API translations start from."""

from __future__ import annotations

from modelplex_router.apis.chat import (
    ChatStreamReader,
    StreamEnd,
    StreamFailure,
    TextDelta,
    ToolCallArguments,
    ToolCallStart,
    read_reply,
    upstream_error,
)
from modelplex_router.apis.sse import Event, EventParser
from router.chat_streams import chat_stream, chunk, splits, sse


def _parse(pieces: list[bytes]) -> list[Event]:
    parser = EventParser()
    return [event for piece in pieces for event in parser.feed(piece)]


def test_the_parser_gives_the_same_events_however_the_bytes_are_cut() -> None:
    data = b"event: a\ndata: 1\n\n: a comment\n\ndata: x\r\ndata: y\r\n\r\nevent: b\rdata:2\r\rdata: 3\n\n"
    expected = [Event("1", "a"), Event("x\ny", None), Event("2", "b"), Event("3", None)]
    assert _parse([data]) == expected
    for pieces in splits(data):
        assert _parse(pieces) == expected


def _pieces(data: bytes) -> list[object]:
    reader = ChatStreamReader()
    return [*reader.feed(data), *reader.finish()]


def test_text_tool_calls_finish_and_usage_come_out_in_order() -> None:
    data = chat_stream(["Hel", "lo"], [("call_1", "get", ['{"a"', ": 1}"])], finish="tool_calls")
    pieces = _pieces(data)
    assert pieces[:5] == [
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallStart(0, "call_1", "get"),
        ToolCallArguments(0, '{"a"'),
        ToolCallArguments(0, ": 1}"),
    ]
    [end] = pieces[5:]
    assert isinstance(end, StreamEnd)
    reply = end.reply
    assert (reply.text, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens) == (
        "Hello",
        "tool_calls",
        7,
        5,
    )
    assert [(c.call_id, c.name, c.arguments) for c in reply.tool_calls] == [("call_1", "get", '{"a": 1}')]


def test_a_tool_call_is_announced_once_its_name_is_known() -> None:
    # Some servers send the id first and the name (and arguments) later: the arguments are held.
    data = sse(
        [
            chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {"arguments": '{"x"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "2}"}}]}, "tool_calls"),
            "[DONE]",
        ]
    )
    pieces = _pieces(data)
    assert pieces[:4] == [
        ToolCallStart(0, "call_9", "f"),
        ToolCallArguments(0, '{"x"'),
        ToolCallArguments(0, ":"),
        ToolCallArguments(0, "2}"),
    ]
    assert isinstance(pieces[4], StreamEnd) and pieces[4].reply.tool_calls[0].arguments == '{"x":2}'


def test_failures_end_the_pieces() -> None:
    cut = _pieces(chat_stream(["a"], done=False))
    assert cut[0] == TextDelta("a") and isinstance(cut[-1], StreamFailure)
    assert "ended before the answer was complete" in cut[-1].error.message

    errored = _pieces(
        sse([chunk({"content": "a"}), {"error": {"message": "generation failed: boom"}}, "[DONE]"])
    )
    assert errored[0] == TextDelta("a") and isinstance(errored[1], StreamFailure) and len(errored) == 2
    assert errored[1].error.message == "generation failed: boom"

    nameless = _pieces(
        sse([chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": "{}"}}]}), "[DONE]"])
    )
    assert isinstance(nameless[-1], StreamFailure) and "without a function name" in nameless[-1].error.message


def test_a_whole_chat_completion_and_runtime_errors() -> None:
    body = (
        b'{"choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "END", "message": {"role": "assistant",'
        b' "content": "hi", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f",'
        b' "arguments": "{}"}}]}}], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}'
    )
    reply = read_reply(body)
    assert (reply.text, reply.stop_reason, reply.prompt_tokens, reply.completion_tokens) == (
        "hi",
        "END",
        2,
        3,
    )
    assert reply.tool_calls[0].name == "f"
    err = upstream_error(
        400,
        b'{"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}',
    )
    assert (err.status_code, err.message, err.code, err.error_type) == (
        400,
        "too long",
        "context_length_exceeded",
        "invalid_request_error",
    )
    plain = upstream_error(503, b"not json")
    assert (plain.status_code, plain.message, plain.error_type) == (503, "not json", "server_error")
