"""Pure pieces of the request layer: body reading, admission, grammars, tool plans, heartbeats, fan-out."""

from __future__ import annotations

import json
import threading

import pytest

from modelplex_runtime import constraints
from modelplex_runtime.admission import AdmissionGate
from modelplex_runtime.api.chat_request import ChatCompletionRequest, response_schema, tool_plan
from modelplex_runtime.bodies import MAX_DEPTH, parse_json_body
from modelplex_runtime.engine.fanout import Group, leaders
from modelplex_runtime.engine.heartbeat import Heartbeat
from modelplex_runtime.errors import APIError

JSON = "application/json"


def test_body_reading_refuses_hostile_bodies_with_4xx() -> None:
    assert parse_json_body(b'{"a": [1, "x"]}', JSON) == {"a": [1, "x"]}
    assert parse_json_body(b'{"a": "\\ud83d\\ude00"}', "application/json; charset=utf-8") == {"a": "\U0001f600"}
    cases = {
        (b"{}", "text/plain"): (415, "text/plain"),
        (b"{}", None): (415, "no Content-Type"),
        (b"[" * 100_000 + b"]" * 100_000, JSON): (400, "nested"),
        (b'{"messages": [{"content": "a\\ud800"}]}', JSON): (400, "messages.0.content"),
        (b'{"\\udc00": 1}', JSON): (400, "surrogate"),
        (b"{not json", JSON): (400, "not valid JSON"),
        (b'{"a": "\xff"}', JSON): (400, "UTF-8"),
    }
    for (body, media), (status, words) in cases.items():
        with pytest.raises(APIError) as exc:
            parse_json_body(body, media)
        assert exc.value.status == status and words in exc.value.message, (body[:20], exc.value.message)
    deep_ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json_body(deep_ok, JSON) is not None
    brackets_in_strings = json.dumps({"t": "[" * 1000}).encode()
    assert parse_json_body(brackets_in_strings, JSON) == {"t": "[" * 1000}


def test_admission_gate_bounds_held_sequences() -> None:
    gate = AdmissionGate(4)
    a = gate.admit(3)
    with pytest.raises(APIError) as exc:
        gate.admit(2)
    assert exc.value.status == 429 and exc.value.retry_after == 1 and exc.value.code == "queue_full"
    b = gate.admit(1)
    a.release()
    a.release()  # once only
    assert gate.held == 1
    b.release()
    assert gate.admit(10).weight == 10  # an empty runtime takes even an oversized request


def test_json_schema_grammar_is_compact_and_tool_grammars_use_the_models_format() -> None:
    spec = constraints.json_schema({"type": "object"})
    assert '"whitespace_flexible": false' in constraints.to_lark(spec, {})
    tools = [("f", {"type": "object", "properties": {"a": {"type": "integer"}}}), ("g", {"type": "object"})]
    hermes = constraints.to_lark(constraints.tool_calls("hermes", tools, parallel=True), {})
    assert '"<tool_call>"' in hermes and '("\\n" call)*' in hermes and '"anyOf"' in hermes
    special = constraints.to_lark(constraints.tool_calls("mistral", tools[:1], parallel=False), {"[TOOL_CALLS]": 9})
    assert special.startswith("start: <[9]>") and '"maxItems": 1' in special
    llama = constraints.to_lark(constraints.tool_calls("llama3_json", tools[:1], parallel=False), {})
    assert '"parameters"' in llama and "call*" not in llama


def _chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "g"}}]


def test_tool_plans() -> None:
    assert tool_plan(_chat(), "hermes").template_tools is None
    auto = tool_plan(_chat(tools=TOOLS), "hermes")
    assert auto.parser == "hermes" and auto.constraint is None and len(auto.template_tools or []) == 2
    none = tool_plan(_chat(tools=TOOLS, tool_choice="none"), None)
    assert none.parser is None and none.template_tools
    required = tool_plan(_chat(tools=TOOLS, tool_choice="required", parallel_tool_calls=False), "hermes")
    assert required.constraint is not None and [n for n, _ in required.constraint.tools] == ["f", "g"]
    assert not required.constraint.parallel
    named = tool_plan(_chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "g"}}), "mistral")
    assert named.constraint is not None and [n for n, _ in named.constraint.tools] == ["g"]
    for bad, words in ((dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "h"}}), "'h'"),
                       (dict(tool_choice="required"), "needs tools")):
        with pytest.raises(APIError, match=words):
            tool_plan(_chat(**bad), "hermes")
    with pytest.raises(APIError) as exc:
        tool_plan(_chat(tools=TOOLS), None)
    assert exc.value.code == "tool_call_parser_unknown"


def test_response_formats() -> None:
    assert response_schema(None) is None
    assert response_schema(_chat(response_format={"type": "text"}).response_format) is None
    obj = response_schema(_chat(response_format={"type": "json_object"}).response_format)
    assert obj is not None and json.loads(obj.schema_json) == {"type": "object"}
    named = _chat(response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "integer"}}})
    spec = response_schema(named.response_format)
    assert spec is not None and spec.name == "p"


def test_refused_fields_are_named() -> None:
    for name in ("audio", "functions", "function_call", "prediction", "reasoning_effort", "web_search_options"):
        with pytest.raises(APIError) as exc:
            _chat(**{name: {"x": 1} if name != "reasoning_effort" else "high"}).refuse_unhonoured()
        assert exc.value.param == name and exc.value.code == "unsupported_parameter"
    with pytest.raises(APIError, match="top_logprobs needs logprobs"):
        _chat(top_logprobs=2).refuse_unhonoured()


def test_heartbeat_reports_dead_and_wedged_threads() -> None:
    now = [0.0]
    beat = Heartbeat(clock=lambda: now[0])
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="engine")
    thread.start()
    try:
        now[0] = 500.0
        assert beat.problem(thread, 120) is None  # idle for long is fine
        beat.busy()
        now[0] = 610.0
        assert beat.problem(thread, 120) is None
        now[0] = 700.0
        assert "no progress for 200 s" in (beat.problem(thread, 120) or "")
        beat.beat()
        assert beat.problem(thread, 120) is None
    finally:
        stop.set()
        thread.join()
    assert "died" in (beat.problem(thread, 120) or "")


def test_fanout_shares_one_prefill_per_group() -> None:
    class Seq:
        def __init__(self, group: object | None) -> None:
            self.group = group

    g = Group()
    a, b, c, d = Seq(g), Seq(g), Seq(None), Seq(g)
    unique, rows = leaders([a, b, c, d])
    assert unique == [a, c] and rows == [0, 0, 1, 0]
    assert leaders([a, c]) == ([a, c], None)


def test_a_stream_dropped_before_it_starts_gives_its_ticket_back() -> None:
    import gc
    from types import SimpleNamespace

    from modelplex_runtime.api import generation

    gate = AdmissionGate(4)
    stream = generation.events(None, None, [[1]], SimpleNamespace(n=2), gate.admit(2))  # type: ignore[arg-type]
    assert gate.held == 2
    del stream  # the client left before the response was iterated: nothing ran, nothing may stay held
    gc.collect()
    assert gate.held == 0
