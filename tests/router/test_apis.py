"""The Responses and Messages APIs through a live router (fake runtimes), with the official ``openai``
and ``anthropic`` clients: translation both ways, keys and scopes, limits, holding, load failures and
runtimes dying mid-answer, each in the API's own shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pydantic
import pytest
from openai.types.responses import ResponseFailedEvent

from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

TEAM_A = "sk-team-a-0123456789abcdef"
TEAM_B = "sk-team-b-0123456789abcdef"
LIMITED = "sk-limited-0123456789abcdef"
KEYS = {
    "keys": [
        {"name": "team-a", "key": TEAM_A, "manage": True},
        {"name": "team-b", "key": TEAM_B, "models": ["alpha", "echo"]},
        {"name": "limited", "key": LIMITED, "models": ["alpha"], "limits": {"rpm": 1}},
    ]
}
MODELS = {
    name: {"alias": name, "Plain": {"model_id": f"org/{name}"}}
    for name in ("alpha", "echo", "slow", "broken", "dying", "glacial")
}
CONTROL = {
    "echo": {"echo": True},
    "slow": {"load_delay": 1.0},
    "broken": {"fail_load": "weights are corrupt (simulated)"},
    "dying": {"die_after_tokens": 2, "token_delay": 0.05},
    "glacial": {"load_delay": 120},
}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    work = tmp_path_factory.mktemp("apis")
    (work / "keys.json").write_text(json.dumps(KEYS))
    router = start_router(
        work / "router",
        MODELS,
        control=CONTROL,
        args=["--api-keys-file", str(work / "keys.json"), "--max-wait-seconds", "4"],
    )
    yield router
    router.stop()


def _openai(router: RouterProcess, key: str = TEAM_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key=key, max_retries=0)


def _anthropic(router: RouterProcess, key: str = TEAM_A) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=router.url, api_key=key, max_retries=0)


class City(pydantic.BaseModel):
    city: str
    days: int


# -- Responses --------------------------------------------------------------------------------------


def test_openai_responses_create_stream_tools_format_and_follow_ups(router: RouterProcess) -> None:
    client = _openai(router)
    first = client.responses.create(model="alpha", input="Hello", max_output_tokens=8, metadata={"t": "1"})
    assert first.status == "completed" and first.model == "alpha" and first.object == "response"
    assert (
        first.output_text == "t0 t1 t2 t3 t4"
        and first.usage.output_tokens == 5
        and first.metadata == {"t": "1"}
    )

    with client.responses.stream(model="alpha", input="Hello") as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert streamed.output_text == "t0 t1 t2 t3 t4 " and streamed.usage.total_tokens == 8

    # A function tool the model must call: the call comes back as a function_call item, streamed too.
    tool = {"type": "function", "name": "weather", "parameters": WEATHER}
    called = client.responses.create(model="alpha", input="Weather?", tools=[tool], tool_choice="required")
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "weather" and json.loads(call.arguments) == {"city": "x"} and call.call_id
    with client.responses.stream(
        model="alpha", input="Weather?", tools=[tool], tool_choice="required"
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert len(deltas) == 2 and json.loads("".join(deltas)) == {"city": "x"}
    assert final.output[-1].arguments == "".join(deltas)

    # text.format: the SDK's parse helper gets a pydantic object back, streamed and not.
    parsed = client.responses.parse(model="alpha", input="Where?", text_format=City)
    assert parsed.output_parsed == City(city="x", days=1)
    with client.responses.stream(model="alpha", input="Where?", text_format=City) as stream:
        assert stream.get_final_response().output_parsed == City(city="x", days=1)

    # previous_response_id: the follow-up carries the earlier turns (the echo model shows what it got).
    echo = _openai(router)
    one = echo.responses.create(model="echo", input="My name is Ada.", instructions="Be kind.")
    two = echo.responses.create(model="echo", input="What is my name?", previous_response_id=one.id)
    assert two.previous_response_id == one.id
    assert json.loads(two.output_text) == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": one.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    # A function call round trip: the call and its output go back as items.
    round_trip = echo.responses.create(
        model="echo",
        input=[
            {"role": "user", "content": "Weather?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
        tools=[tool],
    )
    assert json.loads(round_trip.output_text)[1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def test_stored_responses_are_per_key_and_can_be_deleted(router: RouterProcess) -> None:
    mine, theirs = _openai(router), _openai(router, TEAM_B)
    kept = mine.responses.create(model="alpha", input="Hello")
    assert mine.responses.retrieve(kept.id).output_text == kept.output_text
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="alpha", input="again", previous_response_id=kept.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(kept.id)
    mine.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError) as gone:
        mine.responses.retrieve(kept.id)
    assert gone.value.body["code"] == "response_not_found"
    unstored = mine.responses.create(model="alpha", input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(unstored.id)
    assert router.metric("modelplex_responses_stored") >= 1
    assert router.metric("modelplex_requests_total", endpoint="/v1/responses/{response_id}", code="404") >= 4


def test_responses_errors_are_openai_shaped(router: RouterProcess) -> None:
    client = _openai(router)
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model="alpha", input="x", tools=[{"type": "web_search"}])
    assert (
        "'web_search' is not available" in hosted.value.message
        and hosted.value.body["param"] == "tools[0].type"
    )
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model="alpha", input="x", reasoning={"effort": "high"})
    assert "'reasoning'" in unknown.value.message
    # A model outside the key's scope is as unknown as one that does not exist.
    with pytest.raises(openai.NotFoundError) as hidden:
        _openai(router, TEAM_B).responses.create(model="slow", input="x")
    assert (
        hidden.value.body["code"] == "model_not_found" and "slow" not in hidden.value.message.split(":")[-1]
    )
    with pytest.raises(openai.AuthenticationError):
        _openai(router, "sk-wrong-0123456789abcdef").responses.create(model="alpha", input="x")


def test_a_held_responses_stream_gets_comments_then_events_and_a_failed_load_ends_it(
    router: RouterProcess,
) -> None:
    with router.client(headers={"Authorization": f"Bearer {TEAM_A}"}) as client:
        client.post("/v1/models/unload", json={"model_id": "slow"})
        body = {"model": "slow", "input": "Hello", "stream": True}
        with client.stream("POST", "/v1/responses", json=body) as reply:
            assert reply.status_code == 200
            lines = [line for line in reply.iter_lines() if line]
    assert lines[0] == ": loading slow ..."
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[0]["type"] == "response.created" and data[-1]["type"] == "response.completed"

    stream = _openai(router).responses.create(model="broken", input="Hello", stream=True)
    sent = list(stream)
    assert [e.type for e in sent] == ["response.created", "response.in_progress", "response.failed"]
    assert isinstance(sent[-1], ResponseFailedEvent)
    assert "weights are corrupt (simulated)" in sent[-1].response.error.message
    assert sent[-1].response.status == "failed"


def test_a_runtime_dying_mid_answer_ends_both_apis_streams_with_their_error_event(
    router: RouterProcess,
) -> None:
    sent = list(_openai(router).responses.create(model="dying", input="Hello", stream=True))
    deltas = [e.delta for e in sent if e.type == "response.output_text.delta"]
    assert deltas == ["t0 ", "t1 "] and sent[-1].type == "response.failed"
    assert "failed mid-stream" in sent[-1].response.error.message

    client = _anthropic(router)
    with (
        pytest.raises(anthropic.APIStatusError) as died,
        client.messages.stream(model="dying", max_tokens=16, messages=HI) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert died.value.body["type"] == "error" and "mid-stream" in died.value.body["error"]["message"]


# -- Messages ---------------------------------------------------------------------------------------


def test_anthropic_messages_create_stream_tools_and_count_tokens(router: RouterProcess) -> None:
    client = _anthropic(router)
    message = client.messages.create(
        model="alpha", max_tokens=16, messages=HI, extra_headers={"anthropic-beta": "x"}
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "alpha"
    assert message.content[0].text == "t0 t1 t2 t3 t4" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 5)

    with client.messages.stream(model="alpha", max_tokens=16, messages=HI, system="Be brief.") as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "t0 t1 t2 t3 t4 " and final.content[0].text == text
    assert final.stop_reason == "end_turn" and (final.usage.input_tokens, final.usage.output_tokens) == (3, 5)

    # A tool round trip: the model must call the tool; its result goes back; the echo model shows it.
    tools = [{"name": "weather", "description": "Weather now", "input_schema": WEATHER}]
    asked = client.messages.create(
        model="alpha",
        max_tokens=16,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "tool", "name": "weather"},
    )
    [use] = [block for block in asked.content if block.type == "tool_use"]
    assert asked.stop_reason == "tool_use" and use.name == "weather" and use.input == {"city": "x"}
    with client.messages.stream(
        model="alpha",
        max_tokens=16,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=tools,
        tool_choice={"type": "any"},
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[-1].type == "tool_use" and streamed.content[-1].input == {"city": "x"}
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in asked.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}],
        },
    ]
    answer = client.messages.create(model="echo", max_tokens=16, messages=history, tools=tools)
    received = json.loads(answer.content[0].text)
    assert received[1]["tool_calls"][0]["id"] == use.id
    assert received[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny, 21 C"}

    counted = client.messages.count_tokens(
        model="alpha", messages=[{"role": "user", "content": "one two three"}], tools=tools
    )
    assert counted.input_tokens == 5  # the fake counts words: 3, a turn marker, and the tool's name


def test_anthropic_errors_have_anthropics_shape_and_status(router: RouterProcess) -> None:
    client = _anthropic(router)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=8, messages=HI)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]},
    }
    with pytest.raises(anthropic.AuthenticationError) as no_key:
        _anthropic(router, "sk-wrong-0123456789abcdef").messages.create(
            model="alpha", max_tokens=8, messages=HI
        )
    assert no_key.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        client.messages.create(
            model="alpha",
            max_tokens=8,
            messages=HI,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "server tool 'web_search_20250305'" in server_tool.value.body["error"]["message"]
    with router.client(headers={"x-api-key": TEAM_A, "anthropic-version": "2023-06-01"}) as raw:
        no_max = raw.post("/v1/messages", json={"model": "alpha", "messages": HI})
        assert no_max.status_code == 400 and no_max.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in no_max.json()["error"]["message"]
        not_json = raw.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["type"] == "error"
        wrong_method = raw.get("/v1/messages")
        assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "error"

    limited = _anthropic(router, LIMITED)
    limited.messages.create(model="alpha", max_tokens=8, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as slow_down:
        limited.messages.create(model="alpha", max_tokens=8, messages=HI)
    assert slow_down.value.body["error"]["type"] == "rate_limit_error"
    assert int(slow_down.value.response.headers["retry-after"]) >= 1

    with pytest.raises(anthropic.InternalServerError) as loading:
        client.messages.create(model="glacial", max_tokens=8, messages=HI)
    assert loading.value.status_code == 503 and loading.value.response.headers["retry-after"]
    assert loading.value.body["error"]["type"] == "overloaded_error"
    assert (
        router.metric("modelplex_requests_total", endpoint="/v1/messages", model="glacial", code="503") == 1
    )


def test_a_held_messages_stream_gets_pings_and_a_failed_load_ends_it_with_an_error_event(
    router: RouterProcess,
) -> None:
    with router.client(headers={"x-api-key": TEAM_A}) as client:
        client.post("/v1/models/unload", json={"model_id": "slow"})
        body = {"model": "slow", "max_tokens": 8, "messages": HI, "stream": True}
        with client.stream("POST", "/v1/messages", json=body) as reply:
            assert reply.status_code == 200
            lines = [line for line in reply.iter_lines() if line]
    assert lines[:2] == ["event: ping", 'data: {"type":"ping"}']
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names.count("ping") >= 3  # while it loaded, then Anthropic's own after message_start
    assert names[-2:] == ["message_delta", "message_stop"]

    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        _anthropic(router).messages.stream(model="broken", max_tokens=8, messages=HI) as stream,
    ):
        for _ in stream:
            pass
    error = failed.value.body["error"]
    assert error["type"] == "overloaded_error" and "weights are corrupt (simulated)" in error["message"]
    assert router.metric("modelplex_requests_total", endpoint="/v1/messages", model="broken", code="503") >= 1


def test_the_new_paths_are_in_the_openapi_schema(router: RouterProcess) -> None:
    paths = httpx.get(f"{router.url}/openapi.json").json()["paths"]
    for path in ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object" and ({"messages", "input"} & set(schema["properties"]))
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}


def test_quickstart_style_curl_calls(router: RouterProcess) -> None:
    """What docs/router.md shows with curl: plain JSON in, the API's JSON out."""
    headers = {"Authorization": f"Bearer {TEAM_A}"}
    with router.client(headers=headers) as client:
        reply = client.post("/v1/responses", json={"model": "alpha", "input": "Hello!"}).json()
        assert reply["object"] == "response" and reply["output"][0]["content"][0]["text"] == "t0 t1 t2 t3 t4"
        message = client.post(
            "/v1/messages", json={"model": "default", "max_tokens": 8, "messages": HI}
        ).json()
        assert message["type"] == "message" and message["model"] == "alpha"


def test_the_store_and_body_limits_follow_their_settings_and_each_api_path_is_logged_and_counted(
    router_factory,
) -> None:
    router = router_factory(
        {"alpha": MODELS["alpha"]},
        env={
            "MODELPLEX_ROUTER_RESPONSES_STORE_SIZE": "1",
            "MODELPLEX_ROUTER_RESPONSES_STORE_TTL_SECONDS": "600",
            "MODELPLEX_ROUTER_MAX_BODY_BYTES": "65536",
        },
    )
    # A body over the one body limit: 413 in each API's shape.
    big = {"model": "alpha", "max_tokens": 8, "messages": [{"role": "user", "content": "x" * 70_000}]}
    with router.client() as raw:
        too_large = raw.post("/v1/messages", json=big)
        assert too_large.status_code == 413
        assert too_large.json()["type"] == "error" and too_large.json()["error"]["type"] == "request_too_large"
        too_large = raw.post("/v1/responses", json={"model": "alpha", "input": "x" * 70_000})
        assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "request_too_large"
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    first = client.responses.create(model="alpha", input="one")
    second = client.responses.create(model="alpha", input="two")
    assert client.responses.retrieve(second.id).output_text == second.output_text
    with pytest.raises(openai.NotFoundError):  # one answer kept: the newer pushed the older out
        client.responses.retrieve(first.id)
    assert router.metric("modelplex_responses_stored") == 1
    claude = anthropic.Anthropic(base_url=router.url, api_key="unused", max_retries=0)
    claude.messages.create(model="alpha", max_tokens=8, messages=HI)
    assert claude.messages.count_tokens(model="alpha", messages=HI).input_tokens > 0

    access = [
        line
        for line in map(json.loads, router.log_path.read_text().splitlines())
        if line.get("logger") == "modelplex_router.access"
    ]
    seen = {(line["method"], line["endpoint"], line["status"]) for line in access}
    assert {
        ("POST", "/v1/responses", 200),
        ("GET", "/v1/responses/{response_id}", 200),
        ("GET", "/v1/responses/{response_id}", 404),
        ("POST", "/v1/messages", 200),
        ("POST", "/v1/messages/count_tokens", 200),
    } <= seen
    assert all(line["model"] == "alpha" for line in access if line["status"] == 200)
    assert {f"/v1/responses/{first.id}", f"/v1/responses/{second.id}"} <= {line["path"] for line in access}
    for endpoint in ("/v1/responses", "/v1/messages", "/v1/messages/count_tokens"):
        assert router.metric("modelplex_requests_total", endpoint=endpoint, model="alpha", code="200") >= 1
        assert router.metric("modelplex_request_duration_seconds_count", endpoint=endpoint, model="alpha") >= 1
