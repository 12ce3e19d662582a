"""The SDK against the real router (``modelplex from-config``), with fake runtimes and with a real one.

The fake runtimes (tests/router/fake_runtime.py) make load failures cheap; the real runtime serving a
tiny Llama checks tokenize/detokenize and that the SDK reads streams exactly as the official client does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

import modelplex
from modelplex import AsyncClient, Client, chunk_text
from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

CONFIG = {
    "first": {"alias": "a", "Plain": {"model_id": "org/a"}},
    "second": {"Plain": {"model_id": "org/b"}},
    "broken": {"alias": "bad", "Plain": {"model_id": "org/bad"}},
    "emb": {"alias": "emb", "Embedding": {"model_id": "org/emb"}},
}
FAKE_TEXT = "t0 t1 t2 t3 t4"  # what every fake runtime answers
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def live_router(tmp_path: Path) -> Iterator[RouterProcess]:
    process = start_router(tmp_path / "router", CONFIG, control={"bad": {"fail_load": "CUDA out of memory"}})
    try:
        yield process
    finally:
        process.stop()


def test_model_management_and_requests(live_router: RouterProcess) -> None:
    with Client(live_router.url + "/v1") as client:
        assert client.list_models() == ["a", "org/b", "bad", "emb"]
        assert client.list_models_with_status() == [
            ("a", "unloaded"),
            ("org/b", "unloaded"),
            ("bad", "unloaded"),
            ("emb", "unloaded"),
        ]
        assert client.get_default_model_id() == "a"

        # No model named: the default answers, loading it on the way.
        answer = client.send_chat_completion_request(HI)
        assert (answer["model"], answer["choices"][0]["message"]["content"]) == ("a", FAKE_TEXT)
        assert client.is_model_loaded("a") is True
        # The canonical pipeline name stays accepted next to the alias.
        chunks = list(client.stream_chat_completion_request(HI, model_id="org/a"))
        assert "".join(chunk_text(c) for c in chunks).split() == FAKE_TEXT.split()

        assert client.unload_model("a") == "unloaded"
        assert client.is_model_loaded("a") is False
        assert client.reload_model("a") == "loaded"

        assert client.set_default_model_id("org/b") == "org/b"
        assert client.get_default_model_id() == "org/b"
        assert client.send_completion_request({"prompt": "x"})["model"] == "org/b"
        streamed = "".join(chunk_text(c) for c in client.stream_completion_request({"prompt": "x"}))
        assert streamed.split() == FAKE_TEXT.split()
        assert len(client.send_embedding_request({"input": ["p", "q"]}, model_id="emb")["data"]) == 2


def test_errors(live_router: RouterProcess) -> None:
    with Client(live_router.url) as client:
        with pytest.raises(modelplex.ModelNotFoundError) as not_found:
            client.send_chat_completion_request(HI, model_id="nope")
        assert (not_found.value.status_code, not_found.value.code) == (404, "model_not_found")
        with pytest.raises(modelplex.ModelNotFoundError):
            client.unload_model("nope")
        with pytest.raises(modelplex.ModelNotFoundError):
            client.set_default_model_id("nope")

        with pytest.raises(modelplex.ModelLoadFailedError, match="CUDA out of memory"):
            client.reload_model("bad")
        assert client.model_status("bad") == "failed"
        with pytest.raises(modelplex.ModelLoadFailedError, match="CUDA out of memory"):
            client.send_chat_completion_request(HI, model_id="bad")
        with pytest.raises(modelplex.ModelLoadFailedError, match="CUDA out of memory"):
            list(client.stream_chat_completion_request(HI, model_id="bad"))


def test_async_client(live_router: RouterProcess) -> None:
    async def scenario() -> tuple[list[tuple[str, str]], str]:
        async with AsyncClient(live_router.url) as client:
            text = "".join([chunk_text(c) async for c in client.stream_chat_completion_request(HI, "emb")])
            return await client.list_models_with_status(), text

    statuses, text = asyncio.run(scenario())
    assert text.split() == FAKE_TEXT.split()
    assert ("emb", "loaded") in statuses


def test_responses_and_messages_apis(live_router: RouterProcess) -> None:
    with Client(live_router.url) as client:
        response = client.create_response({"input": "hi", "max_output_tokens": 8}, model_id="a")
        assert response["object"] == "response" and response["model"] == "a"
        assert response["output"][0]["content"][0]["text"] == FAKE_TEXT
        events = list(client.stream_response({"input": "hi"}))
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        assert "".join(chunk_text(e) for e in events).split() == FAKE_TEXT.split()
        kept = events[-1]["response"]["id"]
        assert client.get_response(kept)["output"] == events[-1]["response"]["output"]
        client.delete_response(kept)
        with pytest.raises(modelplex.ModelNotFoundError, match="not found"):
            client.get_response(kept)

        request = {"max_tokens": 8, "messages": HI["messages"]}
        message = client.create_message(request, model_id="a")
        assert message["type"] == "message" and message["content"][0]["text"] == FAKE_TEXT
        events = list(client.stream_message(request))
        assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
        assert "".join(chunk_text(e) for e in events).split() == FAKE_TEXT.split()
        assert client.count_message_tokens({"messages": [{"role": "user", "content": "one two"}]}) == 3

        # Errors keep their types. The first stream is held while "bad" loads, so its failure comes as the
        # API's failure event; after it the model backs off, and requests get the 503 before any byte.
        with pytest.raises(modelplex.InternalServerError, match="CUDA out of memory") as failed_event:
            list(client.stream_response({"input": "hi"}, model_id="bad"))
        assert failed_event.value.code == "server_error" and failed_event.value.status_code is None
        with pytest.raises(modelplex.ModelLoadFailedError, match="CUDA out of memory"):
            client.create_response({"input": "hi"}, model_id="bad")
        with pytest.raises(modelplex.ModelLoadFailedError, match="CUDA out of memory"):
            list(client.stream_response({"input": "hi"}, model_id="bad"))
        with pytest.raises(modelplex.ServiceUnavailableError, match="CUDA out of memory") as overloaded:
            list(client.stream_message(request, model_id="bad"))
        assert overloaded.value.type == "overloaded_error" and overloaded.value.status_code == 503
        with pytest.raises(modelplex.BadRequestError, match="max_tokens"):
            client.create_message({"messages": HI["messages"]}, model_id="a")
        with pytest.raises(modelplex.ModelNotFoundError):
            client.create_message(request, model_id="nope")

    async def scenario() -> tuple[str, int]:
        async with AsyncClient(live_router.url) as client:
            text = "".join([chunk_text(e) async for e in client.stream_message(request, "org/b")])
            return text, await client.count_message_tokens({"messages": HI["messages"]}, "org/b")

    text, tokens = asyncio.run(scenario())
    assert text.split() == FAKE_TEXT.split() and tokens == 2


def test_real_runtime_tokenize_and_stream_parity(tmp_path: Path, tiny_llama_dir: Path) -> None:
    process = start_router(
        tmp_path / "router",
        {"tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}}},
        fake=False,
    )
    try:
        with Client(process.url) as client:
            tokens = client.tokenize_text("hello world", model_id="tiny")
            assert tokens and all(isinstance(t, int) for t in tokens)
            assert client.detokenize_text(tokens, model_id="tiny") == "hello world"
            templated = client.tokenize_text([{"role": "user", "content": "hello world"}])
            assert len(templated) > len(tokens)

            request = {**HI, "max_tokens": 8, "temperature": 0}
            ours = "".join(chunk_text(c) for c in client.stream_chat_completion_request(request))
            whole = client.send_chat_completion_request(request)["choices"][0]["message"]["content"]
        official = OpenAI(base_url=process.url + "/v1", api_key="unused", max_retries=0)
        stream = official.chat.completions.create(
            model="tiny", stream=True, max_tokens=8, temperature=0, messages=HI["messages"]
        )
        theirs = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert ours == theirs == whole
        assert ours
    finally:
        process.stop()
