"""Client and AsyncClient against a fake router on loopback: every method, streaming and the typed errors.

Each scenario runs once with each client through the ``api`` fixture, so the two stay in step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import modelplex
from modelplex import AsyncClient, Client
from sdk.fake_router import BROKEN, BUSY, CUT, MIDFAIL, SLOW, FakeRouter

Api = Callable[..., Any]
STREAMING = ("stream_chat_completion_request", "stream_completion_request")


async def _call_async(url: str, api_key: str | None, method: str, args: tuple, kwargs: dict) -> Any:
    async with AsyncClient(url, api_key=api_key) as client:
        result = getattr(client, method)(*args, **kwargs)
        if method in STREAMING:
            return [chunk async for chunk in result]
        return await result


@pytest.fixture(params=["sync", "async"])
def api_for(request: pytest.FixtureRequest, fake_router: FakeRouter) -> Iterator[Callable[[str | None], Api]]:
    """``api_for(api_key)(method, *args)`` calls the method on a Client or an AsyncClient."""
    clients: list[Client] = []

    def make(api_key: str | None = None) -> Api:
        if request.param == "async":
            return lambda method, *args, **kwargs: asyncio.run(
                _call_async(fake_router.url, api_key, method, args, kwargs)
            )
        client = Client(fake_router.url, api_key=api_key)
        clients.append(client)

        def call(method: str, *args: Any, **kwargs: Any) -> Any:
            result = getattr(client, method)(*args, **kwargs)
            return list(result) if method in STREAMING else result

        return call

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(api_for: Callable[[str | None], Api]) -> Api:
    return api_for(None)


def test_model_management(api: Api, fake_router: FakeRouter) -> None:
    assert api("list_models")[:3] == ["tiny", "other", "embed"]
    assert ("other", "unloaded") in api("list_models_with_status")
    assert (BROKEN, "failed") in api("list_models_with_status")
    assert api("get_default_model_id") == "tiny"
    assert api("set_default_model_id", "other") == "other"
    assert api("get_default_model_id") == "other"
    assert api("is_model_loaded", "other") is False
    assert api("reload_model", "other") == "loaded"
    assert api("is_model_loaded", "other") is True
    assert api("model_status", "other") == "loaded"
    assert api("unload_model", "other") == "unloaded"
    assert fake_router.bodies("/v1/models/unload") == [{"model_id": "other"}]


def test_unknown_models_raise_model_not_found(api: Api) -> None:
    for method in ("is_model_loaded", "unload_model", "reload_model", "model_status", "set_default_model_id"):
        with pytest.raises(modelplex.ModelNotFoundError, match="nope"):
            api(method, "nope")


def test_failed_reload_raises_load_failed(api: Api) -> None:
    with pytest.raises(modelplex.ModelLoadFailedError, match="out of memory") as info:
        api("reload_model", BROKEN)
    assert info.value.code == "internal_error"


def test_chat_goes_to_the_default_model_when_none_is_named(api: Api, fake_router: FakeRouter) -> None:
    request = modelplex.ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    answer = api("send_chat_completion_request", request)
    assert answer["model"] == "tiny"
    assert answer["choices"][0]["message"]["content"] == "echo hi (turn 1)"
    assert "model" not in fake_router.bodies("/v1/chat/completions")[0]
    assert api("send_chat_completion_request", request, model_id="org/tiny-canonical")["model"] == "tiny"
    assert fake_router.bodies("/v1/chat/completions")[1]["model"] == "org/tiny-canonical"


def test_streamed_chat_skips_loading_comments(api: Api, fake_router: FakeRouter) -> None:
    chunks = api(
        "stream_chat_completion_request", {"messages": [{"role": "user", "content": "a b c"}]}, "other"
    )
    assert "".join(modelplex.chunk_text(c) for c in chunks) == "echo a b c (turn 1)"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert fake_router.bodies("/v1/chat/completions")[0] == {
        "messages": [{"role": "user", "content": "a b c"}],
        "model": "other",
        "stream": True,
    }


def test_completions(api: Api) -> None:
    assert (
        api("send_completion_request", {"prompt": "once"}, "tiny")["choices"][0]["text"] == "once and so on"
    )
    chunks = api("stream_completion_request", {"prompt": "once"})
    assert "".join(modelplex.chunk_text(c) for c in chunks) == "once and so on"


def test_embeddings(api: Api, fake_router: FakeRouter) -> None:
    answer = api("send_embedding_request", {"input": ["ab", "abc"]}, model_id="embed")
    assert [d["embedding"][0] for d in answer["data"]] == [2.0, 3.0]
    assert fake_router.bodies("/v1/embeddings") == [{"input": ["ab", "abc"], "model": "embed"}]


def test_tokenize_round_trip(api: Api, fake_router: FakeRouter) -> None:
    tokens = api("tokenize_text", "hi", model_id="tiny")
    assert tokens == [1, ord("h"), ord("i")]
    assert api("tokenize_text", "hi", add_special_tokens=False) == [ord("h"), ord("i")]
    assert api("detokenize_text", tokens) == "hi"
    assert api("detokenize_text", tokens, skip_special_tokens=False, model_id="tiny") == "<s>hi"
    assert fake_router.bodies("/detokenize")[1] == {
        "tokens": tokens,
        "skip_special_tokens": False,
        "model": "tiny",
    }


@pytest.mark.parametrize("method", ["send_chat_completion_request", "stream_chat_completion_request"])
def test_request_errors_are_typed(api: Api, method: str) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(modelplex.ModelNotFoundError, match="does not exist") as not_found:
        api(method, request, "nope")
    assert (not_found.value.status_code, not_found.value.code) == (404, "model_not_found")
    with pytest.raises(modelplex.ModelLoadingError) as loading:
        api(method, request, SLOW)
    assert (loading.value.status_code, loading.value.retry_after) == (503, 7.0)
    with pytest.raises(modelplex.RateLimitError):
        api(method, request, BUSY)
    with pytest.raises(modelplex.ModelLoadFailedError, match="out of memory"):
        api(method, request, BROKEN)


def test_api_key_is_sent_as_bearer_token(api_for: Callable[[str | None], Api]) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(modelplex.AuthenticationError) as info:
        api_for("wrong")("send_chat_completion_request", request, "secret")
    assert info.value.status_code == 401
    assert api_for("sesame")("send_chat_completion_request", request, "secret")["model"] == "secret"


def test_error_event_in_the_middle_of_a_stream_raises(api: Api) -> None:
    with pytest.raises(modelplex.ModelplexError, match="the runtime crashed") as info:
        api("stream_chat_completion_request", {"messages": [{"role": "user", "content": "x y"}]}, MIDFAIL)
    assert info.value.code == "model_crashed"


def test_a_stream_cut_before_done_is_not_taken_as_complete(api: Api) -> None:
    with pytest.raises(modelplex.APIConnectionError, match="ended before its last event"):
        api("stream_chat_completion_request", {"messages": [{"role": "user", "content": "x"}]}, CUT)


def test_unreachable_server_raises_connection_error() -> None:
    from helpers.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(modelplex.APIConnectionError, match="cannot connect"):
        client.list_models()

    async def attempt() -> None:
        async with AsyncClient(url) as aclient:
            await aclient.list_models()

    with pytest.raises(modelplex.APIConnectionError, match="cannot connect"):
        asyncio.run(attempt())


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://modelplex.test/v1", transport=httpx.MockTransport(handler))


def test_answers_that_are_not_the_modelplex_api_raise_invalid_response() -> None:
    with _mock(lambda _r: httpx.Response(200, text="<html>login</html>")) as client:
        with pytest.raises(modelplex.InvalidResponseError, match="not JSON"):
            client.list_models()
        with pytest.raises(modelplex.InvalidResponseError, match="not an event stream"):
            list(client.stream_chat_completion_request({"messages": []}))


def test_sse_framing_comments_and_split_events() -> None:
    body = (
        ": loading tiny ...\n\n: still loading\n\n"
        'data: {"choices": [{"delta": {"content": "He"}}]}\r\n\r\n'
        'data: {"choices": [{"delta": {"content": "llo"}}]}\n\n'
        "data: [DONE]\n\n"
        'data: {"choices": [{"delta": {"content": "ignored after DONE"}}]}\n\n'
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)

    with _mock(handler) as client:
        chunks = list(client.stream_chat_completion_request({"messages": []}))
    assert "".join(modelplex.chunk_text(c) for c in chunks) == "Hello"
    assert seen[0].url == "http://modelplex.test/v1/chat/completions"
    assert seen[0].headers["accept"] == "text/event-stream"
