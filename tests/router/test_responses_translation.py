"""The Responses API translation, both ways, checked against the official ``openai`` package's types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from modelplex_router.apis import responses_request as rr
from modelplex_router.apis.response_store import ResponseStore
from modelplex_router.apis.responses import ResponsesAnswer
from modelplex_router.apis.responses_object import ResponseFrame
from modelplex_router.apis.responses_stream import ResponsesStream
from modelplex_router.errors import BadRequest, LoadFailed
from router.chat_streams import chat_completion, chat_stream, events, normalized, splits, translate

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _frame(request: dict[str, Any], store: ResponseStore | None = None) -> ResponseFrame:
    req = rr.parse_request(request)
    return ResponseFrame(
        req, "tiny", rr.input_messages(req.input), store, b"owner", clock=lambda: 1_700_000_000
    )


# -- requests ---------------------------------------------------------------------------------------


def test_a_string_input_with_instructions_and_sampling() -> None:
    req = rr.parse_request(
        {
            "model": "tiny",
            "input": "Hi",
            "instructions": "Be brief.",
            "max_output_tokens": 9,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": True,
        }
    )
    assert rr.chat_request(req, []) == {
        "model": "tiny",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_items_become_chat_messages_with_tool_calls_and_results() -> None:
    req = rr.parse_request(
        {
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather?"},
                        {"type": "input_text", "text": "In Paris."},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}
                    ],
                },
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_2",
                    "name": "weather",
                    "arguments": '{"city":"Nice"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                        {"type": "input_text", "text": "and this?"},
                    ],
                },
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": False,
            "text": {
                "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
            },
        }
    )
    chat = rr.chat_request(
        req, [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    )
    assert chat["messages"] == [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?\nIn Paris."},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Nice"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                {"type": "text", "text": "and this?"},
            ],
        },
    ]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": WEATHER["parameters"]}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert rr.chat_request(rr.parse_request({"input": "x", "text": {"format": {"type": "json_object"}}}), [])[
        "response_format"
    ] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "'web_search' is not available"),
        ({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]}, "'file_search'"),
        (
            {"input": "x", "tools": [{"type": "computer_use_preview"}]},
            "OpenAI-hosted tool 'computer_use_preview'",
        ),
        ({"input": "x", "tools": [{"type": "code_interpreter"}]}, "'code_interpreter'"),
        ({"input": "x", "reasoning": {"effort": "low"}}, "unsupported field(s): 'reasoning'"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1", "prompt": {"id": "p"}}, "'conversation', 'prompt'"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0]: items of type 'reasoning'"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "'item_reference'"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}, "file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input_file"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "'nope'"),
        ({"input": "x", "tool_choice": "required"}, "no tools are given"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "name: Field required"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"instructions": "no input"}, "input: Field required"),
    ],
)
def test_what_cannot_be_served_is_refused_by_name(request_: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        rr.chat_request(rr.parse_request(request_), [])
    assert named in caught.value.message
    assert caught.value.status_code == 400 and caught.value.param


# -- whole answers ----------------------------------------------------------------------------------


def test_a_whole_answer_is_a_response_the_sdk_accepts_and_is_stored() -> None:
    store = ResponseStore(10, 1 << 20, 60)
    frame = _frame({"input": "Weather?", "tools": [WEATHER], "metadata": {"k": "v"}}, store)
    call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
    }
    status, content, _ = ResponsesAnswer(frame).whole(
        200,
        chat_completion({"role": "assistant", "content": "Let me see.", "tool_calls": [call]}, "tool_calls"),
        "application/json",
    )
    assert status == 200
    response = Response.model_validate(json.loads(content))
    assert response.id == frame.id and response.status == "completed" and response.model == "tiny"
    assert response.output_text == "Let me see."
    fc = response.output[1]
    assert (fc.type, fc.call_id, fc.name, fc.arguments) == (
        "function_call",
        "call_7",
        "weather",
        '{"city":"Paris"}',
    )
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        4,
        6,
        10,
    )
    assert response.metadata == {"k": "v"} and response.tools[0].name == "weather"
    kept = store.get(b"owner", frame.id)
    assert kept is not None and kept.response == json.loads(content)
    assert kept.conversation == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": [call]},
    ]


def test_a_length_cut_answer_is_incomplete_and_runtime_errors_keep_their_status() -> None:
    answer = ResponsesAnswer(_frame({"input": "x", "max_output_tokens": 6, "store": False}))
    _, content, _ = answer.whole(200, chat_completion({"role": "assistant", "content": "abc"}, "length"), "")
    response = Response.model_validate(json.loads(content))
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and json.loads(content)["store"] is False
    status, content, _ = answer.whole(
        400, b'{"error": {"message": "prompt too long", "type": "invalid_request_error"}}', ""
    )
    assert status == 400 and json.loads(content)["error"]["message"] == "prompt too long"
    status, content, _ = answer.whole(200, b"{}", "")
    assert status == 502 and "not a chat completion" in json.loads(content)["error"]["message"]


# -- streams ----------------------------------------------------------------------------------------


def _stream(frame: ResponseFrame) -> ResponsesStream:
    return ResponsesStream(frame)


def _checked(data: bytes) -> list[dict[str, Any]]:
    """Every event parses as the SDK's event type, named as its type, numbered 0, 1, 2, ..."""
    out = []
    for n, (name, payload) in enumerate(events(data)):
        STREAM_EVENT.validate_python(payload)
        assert name == payload["type"] and payload["sequence_number"] == n
        out.append(payload)
    return out


def test_a_streamed_answer_follows_the_documented_event_sequence() -> None:
    store = ResponseStore(10, 1 << 20, 60)
    frame = _frame({"input": "Weather?", "tools": [WEATHER]}, store)
    data = chat_stream(["It ", "is"], [("call_3", "weather", ['{"ci', 'ty": "Paris"}'])], finish="tool_calls")
    stream = _stream(frame)
    sent = _checked(translate(lambda: stream, [data]))
    assert [e["type"] for e in sent] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert sent[0]["response"]["status"] == "in_progress" and sent[0]["response"]["output"] == []
    assert sent[6]["text"] == "It is" and sent[12]["arguments"] == '{"city": "Paris"}'
    final = Response.model_validate(sent[-1]["response"])
    assert final.output_text == "It is" and final.output[1].arguments == '{"city": "Paris"}'
    assert final.usage.input_tokens == 7 and final.usage.output_tokens == 5
    assert store.get(b"owner", frame.id).response == sent[-1]["response"]


def test_every_split_of_the_chat_stream_gives_the_same_events() -> None:
    data = chat_stream(
        ["Hé", "llo ", "wörld"],
        [("call_1", "weather", ['{"city"', ': "Pa', 'ris"}']), ("call_2", "weather", ["{}"])],
        finish="tool_calls",
    )
    frame = _frame({"input": "x", "tools": [WEATHER], "store": False})
    expected = normalized(translate(lambda: _stream(frame), [data]))
    _checked(translate(lambda: _stream(frame), [data]))
    for pieces in splits(data):
        assert normalized(translate(lambda: _stream(frame), pieces)) == expected


def test_tool_call_arguments_split_anywhere_give_the_same_response() -> None:
    arguments = '{"city": "Saint-Étienne", "days": [1, 2]}'
    frame = _frame({"input": "x", "tools": [WEATHER], "store": False})

    def final(fragments: list[str]) -> str:
        sent = _checked(
            translate(
                lambda: _stream(frame), [chat_stream([], [("call_1", "weather", fragments)], "tool_calls")]
            )
        )
        deltas = "".join(e["delta"] for e in sent if e["type"] == "response.function_call_arguments.delta")
        assert deltas == arguments
        return normalized(json.dumps(sent[-1]["response"]["output"]))

    expected = final([arguments])
    for cut in range(len(arguments) + 1):
        assert final([arguments[:cut], arguments[cut:]]) == expected
    assert final(list(arguments)) == expected


def test_an_answer_cut_by_max_output_tokens_ends_incomplete() -> None:
    sent = _checked(
        translate(
            lambda: _stream(_frame({"input": "x", "store": False})), [chat_stream(["ab"], finish="length")]
        )
    )
    assert sent[-1]["type"] == "response.incomplete"
    assert sent[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert sent[-2]["type"] == "response.output_item.done" and sent[-2]["item"]["status"] == "incomplete"


def test_an_empty_answer_is_still_one_message() -> None:
    sent = _checked(translate(lambda: _stream(_frame({"input": "x", "store": False})), [chat_stream([])]))
    assert [e["type"] for e in sent][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


def test_errors_mid_stream_end_it_with_response_failed() -> None:
    frame = _frame({"input": "x", "store": False})
    # The runtime died mid-answer (the router's fail), or its stream was cut, or it sent an error event.
    died = _stream(frame)
    data = died.feed(chat_stream(["partial"], done=False)[:-2]) + died.fail(
        LoadFailed("the runtime stopped mid-stream")
    )
    cut = translate(lambda: _stream(frame), [chat_stream(["partial"], done=False, usage=None)])
    errored = translate(
        lambda: _stream(frame),
        [chat_stream(["a"], usage=None, done=False) + b'data: {"error": {"message": "boom"}}\n\n'],
    )
    for body, reason in [(data, "stopped mid-stream"), (cut, "ended before"), (errored, "boom")]:
        sent = _checked(body)
        assert sent[-1]["type"] == "response.failed" and reason in sent[-1]["response"]["error"]["message"]
        failed = Response.model_validate(sent[-1]["response"])
        assert failed.status == "failed" and failed.error.code == "server_error"
        assert failed.output[0].status == "incomplete"
    # Nothing sent yet (a held stream whose load failed, a refused request): created, then failed.
    early = _checked(_stream(frame).fail(LoadFailed("model 'tiny' failed to load: bad weights")))
    assert [e["type"] for e in early] == ["response.created", "response.in_progress", "response.failed"]
    refused = _checked(_stream(frame).refused(400, b'{"error": {"message": "prompt is too long"}}'))
    assert refused[-1]["response"]["error"]["message"] == "prompt is too long"
