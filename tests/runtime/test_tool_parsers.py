"""Tool-call parsers on hand-written model outputs: whole answers and streamed partial output."""

from __future__ import annotations

import json

import pytest

from modelplex_runtime.tool_parsers import StreamParser, infer_format, parse

OUTPUTS = {
    "hermes": ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
               '"n": [1, {"x": "}"}]}}\n</tool_call>\n<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>'),
    "llama3_json": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "n": [1, {"x": "}"}]}}; '
                   '{"name": "noop", "parameters": {}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "n": [1, {"x": "}"}]}}, '
               '{"name": "noop", "arguments": {}}]',
}
ARGS = [{"city": "Paris", "n": [1, {"x": "}"}]}, {}]


@pytest.mark.parametrize("fmt", sorted(OUTPUTS))
def test_whole_answers_give_calls_and_content(fmt: str) -> None:
    parsed = parse(fmt, OUTPUTS[fmt])
    assert [c.name for c in parsed.calls] == ["get_weather", "noop"]
    assert [json.loads(c.arguments) for c in parsed.calls] == ARGS
    assert parsed.content == ("Let me check." if fmt == "hermes" else None)
    assert all(c.id.startswith("call_") for c in parsed.calls) and parsed.calls[0].id != parsed.calls[1].id


def _stream(fmt: str, text: str, size: int) -> tuple[str, list[tuple[str, str, str]]]:
    parser = StreamParser(fmt)
    deltas = []
    for i in range(0, len(text), size):
        deltas += parser.feed(text[i : i + size])
    deltas += parser.finish()
    content = "".join(d.content or "" for d in deltas)
    calls: dict[int, list[str]] = {}
    for d in deltas:
        if d.name is not None:
            assert d.index not in calls and d.id  # id and name come first, once
            calls[d.index] = [d.id, d.name, ""]
        if d.arguments:
            assert d.index in calls  # fragments only after their call started
            calls[d.index][2] += d.arguments
    return content, [tuple(c) for c in calls.values()]  # type: ignore[misc]


@pytest.mark.parametrize("fmt", sorted(OUTPUTS))
@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_streamed_partial_output_matches_the_whole_parse(fmt: str, size: int) -> None:
    content, calls = _stream(fmt, OUTPUTS[fmt], size)
    assert [name for _, name, _ in calls] == ["get_weather", "noop"]
    assert [json.loads(args) for _, _, args in calls] == ARGS  # fragments concatenate to the arguments' JSON
    assert content.strip() == ("Let me check." if fmt == "hermes" else "")


@pytest.mark.parametrize("fmt", sorted(OUTPUTS))
def test_plain_text_stays_content(fmt: str) -> None:
    text = "Hello there {not a call} <tool"
    assert parse(fmt, text).calls == [] and parse(fmt, text).content == text
    content, calls = _stream(fmt, text, 3)
    assert calls == [] and content == text


def test_broken_call_json_stays_content() -> None:
    text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {oops}\n</tool_call>"
    assert parse("hermes", text).calls == [] and parse("hermes", text).content == text


def test_arguments_written_as_a_string_are_decoded() -> None:
    parsed = parse("hermes", '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>')
    assert json.loads(parsed.calls[0].arguments) == {"a": 1}


def test_format_is_inferred_only_when_unambiguous() -> None:
    assert infer_format("{% if tools %}<tool_call>{% endif %}") == "hermes"
    assert infer_format("[AVAILABLE_TOOLS] [TOOL_CALLS]") == "mistral"
    assert infer_format("<|python_tag|>{{ x }}") == "llama3_json"
    assert infer_format("<tool_call> and [TOOL_CALLS]") is None
    assert infer_format("{{ messages }}") is None and infer_format(None) is None
