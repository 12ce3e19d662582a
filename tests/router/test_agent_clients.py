"""What agent clients send, through the router to a real runtime, with the official openai and anthropic
packages: ``chat.completions.parse`` with a pydantic model and its streaming tool-call helpers; the
Responses API with a function tool, ``text.format`` and a follow-up; the Messages API's tool round trip,
structured output and token count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from pydantic import BaseModel, Field

from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

HERMES = (
    "{% if tools %}<|system|>\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools></s>\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>\n{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    admin: bool


class GetWeather(BaseModel):
    city: str = Field(max_length=12)
    days: int = Field(ge=1, le=7)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[RouterProcess]:
    work = tmp_path_factory.mktemp("agent-router")
    config = {"tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}, "chat_template": HERMES}}
    proc = start_router(work, config, fake=False)
    yield proc
    proc.stop()


def _client(router: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_parse_with_a_pydantic_model(router: RouterProcess) -> None:
    client = _client(router)
    for seed in range(3):
        completion = client.chat.completions.parse(
            model="tiny", messages=[{"role": "user", "content": "Who is the admin?"}], response_format=Person,
            max_tokens=120, temperature=1.0, seed=seed)
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Person)
        assert Person.model_validate_json(choice.message.content or "") == choice.message.parsed


def test_streaming_tool_call_helpers(router: RouterProcess) -> None:
    client = _client(router)
    tool = openai.pydantic_function_tool(GetWeather)
    with client.chat.completions.stream(
        model="tiny", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[tool],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}}, max_tokens=120, temperature=1.0,
        seed=1,
    ) as stream:
        deltas = []
        done = []
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas.append(event.arguments_delta)
            elif event.type == "tool_calls.function.arguments.done":
                done.append(event)
        final = stream.get_final_completion()
    assert len(done) == 1 and done[0].name == "GetWeather"
    assert isinstance(done[0].parsed_arguments, GetWeather)  # strict tool: the helper parsed the arguments
    assert json.loads("".join(deltas)) == json.loads(done[0].arguments)
    call = (final.choices[0].message.tool_calls or [])[0]
    assert final.choices[0].finish_reason == "tool_calls" and isinstance(call.function.parsed_arguments, GetWeather)


# Closed objects (no other keys), as strict tools and formats are: a random model closes them.
WEATHER_SCHEMA = {**GetWeather.model_json_schema(), "additionalProperties": False}
PERSON_SCHEMA = {**Person.model_json_schema(), "additionalProperties": False}
WEATHER_TOOL = {"type": "function", "name": "GetWeather", "parameters": WEATHER_SCHEMA, "strict": True}


def test_responses_api_function_tool_text_format_and_follow_up(router: RouterProcess) -> None:
    # Greedy decoding (temperature 0): the Responses API has no seed, and each answer must be reproducible.
    client = _client(router)
    ask = {
        "model": "tiny",
        "input": "Weather in Paris?",
        "tools": [WEATHER_TOOL],
        "max_output_tokens": 120,
        "temperature": 0,
    }
    called = client.responses.create(**ask, tool_choice={"type": "function", "name": "GetWeather"})
    assert called.status == "completed"
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "GetWeather" and isinstance(
        GetWeather.model_validate_json(call.arguments), GetWeather
    )

    with client.responses.stream(**ask, tool_choice="required", parallel_tool_calls=False) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [streamed] = [item for item in final.output if item.type == "function_call"]
    assert "".join(deltas) == streamed.arguments and GetWeather.model_validate_json(streamed.arguments)

    # The call's result goes back on a follow-up: the runtime renders the call and its output.
    answer = client.responses.create(
        model="tiny",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER_TOOL],
        max_output_tokens=4,
    )
    assert answer.previous_response_id == called.id
    assert answer.usage.input_tokens > called.usage.input_tokens

    who = {"model": "tiny", "input": "Who is the admin?", "max_output_tokens": 120, "temperature": 0}
    parsed = client.responses.parse(**who, text_format=Person)
    assert parsed.status == "completed" and isinstance(parsed.output_parsed, Person)
    with client.responses.stream(**who, text_format=Person) as stream:
        assert isinstance(stream.get_final_response().output_parsed, Person)


def test_messages_api_tool_round_trip_output_format_and_token_count(router: RouterProcess) -> None:
    # Greedy decoding, so that each answer is reproducible (this anthropic release takes it as extra_body).
    client = anthropic.Anthropic(base_url=router.url, api_key="unused", max_retries=0, timeout=120)
    greedy = {"temperature": 0}
    tools = [{"name": "GetWeather", "description": "The weather", "input_schema": WEATHER_SCHEMA}]
    question = [{"role": "user", "content": "Weather in Paris?"}]
    asked = client.messages.create(
        model="tiny",
        max_tokens=120,
        messages=question,
        tools=tools,
        tool_choice={"type": "tool", "name": "GetWeather"},
        extra_body=greedy,
    )
    [use] = [block for block in asked.content if block.type == "tool_use"]
    assert (
        asked.stop_reason == "tool_use" and use.name == "GetWeather" and GetWeather.model_validate(use.input)
    )

    with client.messages.stream(
        model="tiny",
        max_tokens=120,
        messages=question,
        tools=tools,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body=greedy,
    ) as stream:
        partial = "".join(
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and json.loads(partial) == final.content[-1].input
    assert GetWeather.model_validate(final.content[-1].input)

    turn = [
        *question,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in asked.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}],
        },
    ]
    answer = client.messages.create(
        model="tiny", max_tokens=4, messages=turn, tools=tools, tool_choice={"type": "none"}
    )
    assert answer.content[0].type == "text" and answer.usage.input_tokens > asked.usage.input_tokens
    # count_tokens renders the messages and tools as the answer's prompt was rendered.
    counted = client.messages.count_tokens(model="tiny", messages=turn, tools=tools)
    assert counted.input_tokens == answer.usage.input_tokens

    person = client.messages.create(
        model="tiny",
        max_tokens=120,
        messages=[{"role": "user", "content": "Who is the admin?"}],
        output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
        extra_body=greedy,
    )
    assert person.stop_reason == "end_turn" and Person.model_validate_json(person.content[0].text)


def test_the_router_caps_n_times_max_tokens(tmp_path: Path, tiny_llama_dir: Path) -> None:
    config = {"tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}}}
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "a", "key": "sk-agent-test-key-0001", "limits": {"max_tokens": 8}}]}))
    proc = start_router(tmp_path / "r", config, fake=False, args=["--api-keys-file", str(keys)])
    try:
        client = openai.OpenAI(base_url=proc.url + "/v1", api_key="sk-agent-test-key-0001", max_retries=0, timeout=120)
        ok = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], n=2,
                                            max_tokens=4)
        assert len(ok.choices) == 2
        with pytest.raises(openai.BadRequestError, match="5 x 2 sequences"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], n=2,
                                           max_tokens=5)
    finally:
        proc.stop()
