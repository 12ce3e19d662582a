"""What agent clients send, through the router to a real runtime, with the official openai package:
``chat.completions.parse`` with a pydantic model, and its streaming tool-call helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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
