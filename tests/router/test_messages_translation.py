"""The Anthropic Messages API translation, both ways, checked against the official ``anthropic`` types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from modelplex_router.apis import messages_request as mr
from modelplex_router.apis.messages import MessagesAnswer, TokenCountAnswer
from modelplex_router.apis.messages_object import ANTHROPIC_ERRORS, error_type
from modelplex_router.apis.messages_stream import MessagesStream
from modelplex_router.errors import BadRequest, LoadWaitTimeout, RateLimited, UpstreamError
from router.chat_streams import chat_completion, chat_stream, events, normalized, splits, translate

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
WEATHER = {
    "name": "weather",
    "description": "Weather now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": WEATHER["input_schema"], "description": "Weather now"},
}
HELLO = {"model": "tiny", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}


# -- requests ---------------------------------------------------------------------------------------


def test_system_blocks_tool_round_trip_and_sampling() -> None:
    req = mr.parse_request(
        {
            "model": "tiny",
            "max_tokens": 32,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use tools."},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in Paris?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": "no data",
                            "is_error": True,
                        },
                        {"type": "text", "text": "Thanks, and tomorrow?"},
                    ],
                },
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "temperature": 0.3,
            "top_p": 0.8,
            "top_k": 40,
            "metadata": {"user_id": "u1"},
            "stream": True,
        }
    )
    assert mr.chat_request(req) == {
        "model": "tiny",
        "max_tokens": 32,
        "messages": [
            {"role": "system", "content": "Be brief.\nUse tools."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
            {"role": "user", "content": "Thanks, and tomorrow?"},
        ],
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 40,
        "stop": ["END"],
        "tools": [CHAT_WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_tool_choices_structured_output_and_token_counts() -> None:
    def choice(tc: dict[str, Any]) -> Any:
        return mr.chat_request(mr.parse_request({**HELLO, "tools": [WEATHER], "tool_choice": tc})).get(
            "tool_choice"
        )

    assert choice({"type": "auto"}) == "auto"
    assert choice({"type": "none"}) == "none"
    assert choice({"type": "tool", "name": "weather"}) == {
        "type": "function",
        "function": {"name": "weather"},
    }
    fmt = mr.chat_request(
        mr.parse_request(
            {**HELLO, "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}
        )
    )
    assert fmt["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }
    count = mr.tokenize_request(
        mr.parse_count_request(
            {
                "model": "tiny",
                "system": "S",
                "tools": [WEATHER],
                "messages": [{"role": "user", "content": "Hi"}],
            }
        )
    )
    assert count == {
        "model": "tiny",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "add_generation_prompt": True,
        "tools": [CHAT_WEATHER],
    }


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        ({**HELLO, "max_tokens": None}, "max_tokens"),
        ({"messages": HELLO["messages"]}, "max_tokens: Field required"),
        (
            {**HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "server tool 'web_search_20250305'",
        ),
        ({**HELLO, "tools": [{"type": "bash_20250124", "name": "bash"}]}, "'bash_20250124'"),
        (
            {**HELLO, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "'document' are not supported",
        ),
        ({**HELLO, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({**HELLO, "mcp_servers": []}, "unsupported field(s): 'mcp_servers'"),
        ({**HELLO, "tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "'nope'"),
        ({**HELLO, "tool_choice": {"type": "any"}}, "no tools are given"),
        ({**HELLO, "temperature": 1.5}, "temperature"),
        (
            {
                **HELLO,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}
                ],
            },
            "a tool_use block cannot be in a user message",
        ),
        ({**HELLO, "messages": []}, "messages"),
    ],
)
def test_what_cannot_be_served_is_refused_by_name(request_: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        mr.chat_request(mr.parse_request(request_))
    assert named in caught.value.message and caught.value.param


def test_errors_have_anthropics_shape_and_type_for_each_status() -> None:
    assert [error_type(s) for s in (400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504)] == [
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "invalid_request_error",
        "rate_limit_error",
        "api_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    ]
    busy = ANTHROPIC_ERRORS.response(LoadWaitTimeout("still loading", headers={"Retry-After": "10"}))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "10"
    assert json.loads(busy.body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "still loading"},
    }
    limited = ANTHROPIC_ERRORS.response(RateLimited("slow down"))
    assert limited.status_code == 429 and json.loads(limited.body)["error"]["type"] == "rate_limit_error"


# -- whole answers ----------------------------------------------------------------------------------


def test_a_whole_answer_is_a_message_the_sdk_accepts() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    status, content, _ = MessagesAnswer("tiny", None).whole(
        200,
        chat_completion(
            {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}, "tool_calls"
        ),
        "",
    )
    message = Message.model_validate(json.loads(content))
    assert status == 200 and message.model == "tiny" and message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Let me check."
    tool = message.content[1]
    assert (tool.type, tool.id, tool.name, tool.input) == ("tool_use", "call_1", "weather", {"city": "Paris"})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 6)


@pytest.mark.parametrize(
    ("finish", "extra", "stops", "reason", "sequence"),
    [
        ("stop", {}, None, "end_turn", None),
        ("length", {}, None, "max_tokens", None),
        ("stop", {"stop_reason": "END"}, ["END"], "stop_sequence", "END"),
        ("stop", {"stop_reason": 2}, ["END"], "end_turn", None),
    ],
)
def test_stop_reasons(
    finish: str, extra: dict[str, Any], stops: list[str] | None, reason: str, sequence: str | None
) -> None:
    _, content, _ = MessagesAnswer("tiny", stops).whole(
        200, chat_completion({"role": "assistant", "content": "x"}, finish, **extra), ""
    )
    message = Message.model_validate(json.loads(content))
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


def test_runtime_errors_and_bad_tool_arguments_come_back_in_anthropics_shape() -> None:
    answer = MessagesAnswer("tiny", None)
    status, content, _ = answer.whole(
        400, b'{"error": {"message": "prompt too long", "type": "invalid_request_error"}}', ""
    )
    assert status == 400 and json.loads(content) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt too long"},
    }
    call = {"id": "c", "type": "function", "function": {"name": "weather", "arguments": "[1, 2]"}}
    status, content, _ = answer.whole(
        200, chat_completion({"role": "assistant", "content": None, "tool_calls": [call]}), ""
    )
    assert status == 502 and "not a JSON object" in json.loads(content)["error"]["message"]


def test_token_counts_from_either_engines_tokenize() -> None:
    count = TokenCountAnswer()
    _, content, _ = count.whole(200, b'{"tokens": [1, 2, 3], "count": 3, "max_model_len": 64}', "")
    assert MessageTokensCount.model_validate(json.loads(content)).input_tokens == 3
    _, content, _ = count.whole(200, b'{"tokens": [1, 2]}', "")
    assert json.loads(content) == {"input_tokens": 2}
    status, content, _ = count.whole(404, b'{"detail": "Not Found"}', "")
    assert status == 501 and "no /tokenize endpoint" in json.loads(content)["error"]["message"]


# -- streams ----------------------------------------------------------------------------------------


def _checked(data: bytes) -> list[dict[str, Any]]:
    """Every event is named as its type and parses as the SDK's event type (pings and errors aside)."""
    out = []
    for name, payload in events(data):
        assert name == payload["type"]
        if name not in ("ping", "error"):
            STREAM_EVENT.validate_python(payload)
        out.append(payload)
    return out


def test_a_streamed_answer_follows_anthropics_event_sequence() -> None:
    data = chat_stream(["It ", "is"], [("call_3", "weather", ['{"ci', 'ty": "Paris"}'])], finish="tool_calls")
    sent = _checked(translate(lambda: MessagesStream("tiny", None), [data]))
    assert [(e["type"], e.get("delta", {}).get("type")) for e in sent] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", None),
        ("content_block_delta", "text_delta"),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "input_json_delta"),
        ("content_block_delta", "input_json_delta"),
        ("content_block_stop", None),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert sent[0]["message"]["content"] == [] and sent[0]["message"]["model"] == "tiny"
    assert [e.get("index") for e in sent[2:10]] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sent[6]["content_block"] == {"type": "tool_use", "id": "call_3", "name": "weather", "input": {}}
    assert "".join(e["delta"]["partial_json"] for e in sent[7:9]) == '{"city": "Paris"}'
    assert sent[10]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert sent[10]["usage"] == {"input_tokens": 7, "output_tokens": 5}


def test_every_split_of_the_chat_stream_gives_the_same_events() -> None:
    data = chat_stream(
        ["Hé", "llo"],
        [("call_1", "weather", ['{"city"', ': "Pa', 'ris"}']), ("call_2", "weather", ["{}"])],
        "tool_calls",
    )
    expected = normalized(translate(lambda: MessagesStream("tiny", None), [data]))
    for pieces in splits(data):
        assert normalized(translate(lambda: MessagesStream("tiny", None), pieces)) == expected


def test_tool_input_split_anywhere_gives_the_same_input() -> None:
    arguments = '{"city": "Saint-Étienne", "days": [1, 2]}'
    for cut in range(len(arguments) + 1):
        data = chat_stream([], [("call_1", "weather", [arguments[:cut], arguments[cut:]])], "tool_calls")
        sent = _checked(translate(lambda: MessagesStream("tiny", None), [data]))
        partial = "".join(e["delta"]["partial_json"] for e in sent if e["type"] == "content_block_delta")
        assert json.loads(partial) == {"city": "Saint-Étienne", "days": [1, 2]}
        assert [e["type"] for e in sent].count("content_block_start") == 1


def test_errors_mid_stream_end_it_with_an_error_event() -> None:
    died = MessagesStream("tiny", None)
    body = died.feed(chat_stream(["partial"], done=False, usage=None)) + died.fail(
        UpstreamError("the runtime stopped mid-stream")
    )
    cut = translate(lambda: MessagesStream("tiny", None), [chat_stream(["partial"], done=False, usage=None)])
    for data, reason in [(body, "stopped mid-stream"), (cut, "ended before")]:
        sent = _checked(data)
        assert sent[-1] == {
            "type": "error",
            "error": {"type": "api_error", "message": sent[-1]["error"]["message"]},
        }
        assert reason in sent[-1]["error"]["message"]
        assert "message_stop" not in [e["type"] for e in sent]
    held = _checked(MessagesStream("tiny", None).fail(LoadWaitTimeout("model 'tiny' is still loading")))
    assert held == [
        {"type": "error", "error": {"type": "overloaded_error", "message": "model 'tiny' is still loading"}}
    ]
