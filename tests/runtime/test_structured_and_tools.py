"""Structured outputs and tool calls on real runtimes (tiny random-weight models, temperature 1.0):
every json_schema answer validates with finish_reason "stop"; required and named tool choices always give
valid calls in each model's own format (hermes, llama3_json, mistral with [TOOL_CALLS] a special token);
streamed fragments concatenate to valid JSON; tool results render on the next turn; refused fields 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from helpers.runtime_process import RuntimeProcess, start_runtime

pytestmark = pytest.mark.integration

# Small chat templates teaching each format, as the models' own templates do.
TEMPLATES = {
    "hermes": (
        "{% if tools %}<|system|>\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools></s>\n{% endif %}"
        "{% for m in messages %}<|{{ m.role }}|>\n"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
        "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>{% endfor %}"
        "{% elif m.role == 'tool' %}<tool_response>\n{{ m.content }}\n</tool_response>"
        "{% else %}{{ m.content }}{% endif %}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "llama3_json": (
        "{% if tools %}<|system|>\nEnvironment: ipython. Answer with a call as JSON:"
        "{% for t in tools %} {{ t.function | tojson }}{% endfor %}</s>\n{% endif %}"
        "{% for m in messages %}<|{{ m.role }}|>\n"
        "{% if m.tool_calls %}<|python_tag|>{% for c in m.tool_calls %}"
        "{{ {'name': c.function.name, 'parameters': c.function.arguments} | tojson }}{% endfor %}"
        "{% else %}{{ m.content }}{% endif %}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "mistral": (
        "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
        "{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
        "{% elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | map(attribute='function') | list | tojson }}</s>"
        "{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
        "{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"
    ),
}

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {},
                                                                          "additionalProperties": False}}}]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
SEEDS = range(4)


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def fmt_runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                tiny_llama_dir: Path) -> Iterator[tuple[str, RuntimeProcess]]:
    fmt = request.param
    model_dir = tiny_llama_dir
    if fmt == "mistral":  # its marker is a special token, as in Mistral's tokenizers
        from modelplex_runtime.engine.tiny import make_tiny_llama

        model_dir = make_tiny_llama(tmp_path_factory.mktemp("tiny-mistral"), special_tokens=("[TOOL_CALLS]",))
    template = tmp_path_factory.mktemp("templates") / f"{fmt}.jinja"
    template.write_text(TEMPLATES[fmt])
    entry = {"Plain": {"model_id": str(model_dir)}, "alias": f"tiny-{fmt}", "chat_template": str(template)}
    with start_runtime(entry) as rt:
        yield fmt, rt


def client(rt: RuntimeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=rt.url + "/v1", api_key="unused", max_retries=0)


def _validate_calls(calls: list[Any]) -> None:
    assert calls
    for call in calls:
        args = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            jsonschema.validate(args, WEATHER)
        else:
            assert call.function.name == "ping" and args == {}
        assert call.id.startswith("call_") and call.type == "function"


def test_the_format_is_inferred_from_the_template(fmt_runtime: tuple[str, RuntimeProcess]) -> None:
    fmt, rt = fmt_runtime
    assert httpx.get(rt.url + "/ready").json()["tool_call_parser"] == fmt


def test_required_and_named_choices_always_give_valid_calls(fmt_runtime: tuple[str, RuntimeProcess]) -> None:
    fmt, rt = fmt_runtime
    c = client(rt)
    named = {"type": "function", "function": {"name": "get_weather"}}
    for seed in SEEDS:
        for choice in ("required", named):
            resp = c.chat.completions.create(model=f"tiny-{fmt}", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                             parallel_tool_calls=False, max_tokens=160, temperature=1.0, seed=seed)
            msg = resp.choices[0].message
            assert resp.choices[0].finish_reason == "tool_calls", msg
            assert len(msg.tool_calls or []) == 1
            _validate_calls(msg.tool_calls or [])
            if choice is named:
                assert [t.function.name for t in msg.tool_calls or []] == ["get_weather"]
        # Parallel calls: a random model may chain calls until max_tokens; every complete one is valid.
        resp = c.chat.completions.create(model=f"tiny-{fmt}", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                         max_tokens=200, temperature=1.0, seed=seed)
        assert resp.choices[0].finish_reason in ("tool_calls", "length")
        _validate_calls(resp.choices[0].message.tool_calls or [])


def test_streamed_tool_call_fragments_concatenate_to_valid_json(fmt_runtime: tuple[str, RuntimeProcess]) -> None:
    fmt, rt = fmt_runtime
    for seed in SEEDS:
        stream = client(rt).chat.completions.create(
            model=f"tiny-{fmt}", messages=MESSAGES, tools=TOOLS, max_tokens=160, temperature=1.0, seed=seed,
            tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True)
        calls: dict[int, dict[str, str]] = {}
        finishes = []
        for chunk in stream:
            choice = chunk.choices[0]
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
            for part in choice.delta.tool_calls or []:
                if part.id is not None:  # the first delta of a call: id and name, empty arguments
                    assert part.index not in calls and part.function.name == "get_weather"
                    calls[part.index] = {"id": part.id, "arguments": part.function.arguments or ""}
                else:
                    calls[part.index]["arguments"] += part.function.arguments or ""
        assert finishes == ["tool_calls"] and list(calls) == [0]
        jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER)


def test_tool_results_render_on_the_next_turn(fmt_runtime: tuple[str, RuntimeProcess]) -> None:
    fmt, rt = fmt_runtime
    turn = [*MESSAGES,
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny and 21C"}]
    tok = httpx.post(rt.url + "/tokenize", json={"messages": turn}).json()
    prompt = httpx.post(rt.url + "/detokenize", json={"tokens": tok["tokens"], "skip_special_tokens": False}).json()["text"]
    assert "sunny and 21C" in prompt and "get_weather" in prompt and '"days": 2' in prompt
    resp = client(rt).chat.completions.create(model=f"tiny-{fmt}", messages=turn, tools=TOOLS, max_tokens=8)
    assert resp.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_json_schema_answers_validate_for_every_seed(llama_runtime: RuntimeProcess) -> None:
    rt = llama_runtime
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                                               "ok": {"type": "boolean"}},
              "required": ["name", "tags", "ok"], "additionalProperties": False}
    fmt_body = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    for seed in SEEDS:
        resp = client(rt).chat.completions.create(model="tiny-chat", messages=MESSAGES, response_format=fmt_body,
                                                  max_tokens=200, temperature=1.0, seed=seed)
        assert resp.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(resp.choices[0].message.content or ""), schema)
    # Any object: keys are free text, which a random model may not close; each answer is an object as far
    # as it goes, and those that finish parse.
    closed = 0
    for seed in range(8):
        obj = client(rt).chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=60, seed=seed,
                                                 response_format={"type": "json_object"})
        content = obj.choices[0].message.content or ""
        assert content.startswith("{")
        if obj.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
            closed += 1
    assert closed


def test_refusals_name_their_field(llama_runtime: RuntimeProcess) -> None:
    rt = llama_runtime
    chat = rt.url + "/v1/chat/completions"
    cases = {
        "audio": {"audio": {"voice": "alloy", "format": "wav"}},
        "functions": {"functions": [{"name": "f"}]},
        "function_call": {"function_call": "auto"},
        "prediction": {"prediction": {"type": "content", "content": "x"}},
        "reasoning_effort": {"reasoning_effort": "high"},
        "web_search_options": {"web_search_options": {}},
        "top_logprobs": {"top_logprobs": 2},
        "response_format": {"response_format": {"type": "json_schema",
                                                "json_schema": {"name": "x", "schema": {"type": "string",
                                                                                        "format": "no-such"}}}},
        "tool_choice": {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "store": {"store": True},
        "modalities": {"modalities": ["text", "audio"]},
        "nonsense_field": {"nonsense_field": 1},
    }
    for param, extra in cases.items():
        r = httpx.post(chat, json={"messages": MESSAGES, "max_tokens": 2, **extra})
        assert r.status_code == 400, (param, r.text)
        error = r.json()["error"]
        assert error["param"] is not None and error["param"].startswith(param), (param, error)
    r = httpx.post(rt.url + "/v1/completions", json={"prompt": "x", "suffix": "y"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


def test_an_unknown_format_refuses_tools_but_not_tool_choice_none(llama_runtime: RuntimeProcess) -> None:
    chat = llama_runtime.url + "/v1/chat/completions"
    r = httpx.post(chat, json={"messages": MESSAGES, "tools": TOOLS, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "tool_call_parser_unknown"
    r = httpx.post(chat, json={"messages": MESSAGES, "tools": TOOLS, "tool_choice": "none", "max_tokens": 2})
    assert r.status_code == 200 and "tool_calls" not in r.json()["choices"][0]["message"]


def test_tokenize_renders_tools_as_the_chat_prompt_does(fmt_runtime: tuple[str, RuntimeProcess]) -> None:
    fmt, rt = fmt_runtime
    bare = httpx.post(rt.url + "/tokenize", json={"messages": MESSAGES}).json()["count"]
    with_tools = httpx.post(rt.url + "/tokenize", json={"messages": MESSAGES, "tools": TOOLS}).json()["count"]
    answer = client(rt).chat.completions.create(model=f"tiny-{fmt}", messages=MESSAGES, tools=TOOLS,
                                                tool_choice="none", max_tokens=1)
    assert with_tools == answer.usage.prompt_tokens > bare
    refused = httpx.post(rt.url + "/tokenize", json={"text": "hi", "tools": TOOLS})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"
