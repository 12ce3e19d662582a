"""The pure request builders and answer parsers shared by both clients."""

from __future__ import annotations

import json

import pydantic
import pytest

import modelplex
from modelplex.sdk import calls, streams


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:1234", "http://127.0.0.1:1234"),
        ("http://127.0.0.1:1234/", "http://127.0.0.1:1234"),
        ("http://127.0.0.1:1234/v1", "http://127.0.0.1:1234"),
        ("https://llm.example/prefix/v1/", "https://llm.example/prefix"),
    ],
)
def test_base_url_accepts_openai_style_urls(given: str, root: str) -> None:
    assert calls.normalize_base_url(given) == root


def test_base_url_needs_a_scheme() -> None:
    with pytest.raises(ValueError, match="http://"):
        calls.normalize_base_url("127.0.0.1:1234")


def test_model_id_overrides_and_none_leaves_the_model_out() -> None:
    request = modelplex.ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])
    assert "model" not in calls.chat_completion(request).body
    assert calls.chat_completion(request, "m1").body["model"] == "m1"
    assert calls.chat_completion({**request, "model": "m0"}).body["model"] == "m0"
    assert calls.chat_completion({**request, "model": "m0"}, "m1").body["model"] == "m1"
    # The caller's request is not modified.
    assert "model" not in request


def test_pydantic_requests_are_dumped_without_nones() -> None:
    class Req(pydantic.BaseModel):
        prompt: str
        max_tokens: int | None = None

    assert calls.completion(Req(prompt="p")).body == {"prompt": "p"}


def test_request_must_be_a_mapping_or_model() -> None:
    with pytest.raises(TypeError, match="dict or a pydantic model"):
        calls.chat_completion(["not", "a", "request"])


def test_stream_flag_follows_the_method() -> None:
    request = {"messages": [], "stream": True, "stream_options": {"include_usage": True}}
    assert "stream" not in calls.chat_completion(request).body
    assert calls.stream_chat_completion({"messages": []}).body["stream"] is True
    assert calls.stream_completion({"prompt": "x"}).path == "/v1/completions"


def test_tokenize_bodies() -> None:
    assert calls.tokenize("hi").body == {"add_special_tokens": True, "text": "hi"}
    messages = [{"role": "user", "content": "hi"}]
    assert calls.tokenize(messages, False, "m").body == {
        "add_special_tokens": False,
        "messages": messages,
        "model": "m",
    }
    assert calls.detokenize([1, 2], model_id="m").body == {
        "tokens": [1, 2],
        "skip_special_tokens": True,
        "model": "m",
    }


def test_model_list_parsing_drops_default() -> None:
    body = {"object": "list", "data": [{"id": "default"}, {"id": "a", "status": "loaded"}, {"id": "b"}]}
    assert calls.list_models().parse(body) == ["a", "b"]
    assert calls.list_models_with_status().parse(body) == [("a", "loaded"), ("b", "unknown")]


def test_status_parsing() -> None:
    assert calls.is_model_loaded("a").parse({"model_id": "a", "status": "loaded"}) is True
    assert calls.is_model_loaded("a").parse({"model_id": "a", "status": "reloading"}) is False
    with pytest.raises(modelplex.ModelNotFoundError, match="'zzz'"):
        calls.model_status("zzz").parse({"model_id": "zzz", "status": "not_found"})
    assert calls.unload_model("a").parse({"model_id": "a", "status": "unloaded"}) == "unloaded"
    with pytest.raises(modelplex.ModelLoadFailedError, match="out of memory"):
        calls.reload_model("a").parse({"model_id": "a", "status": "internal_error", "error": "out of memory"})
    # Asking for the status of a failed model is not itself an error.
    assert calls.model_status("a").parse({"model_id": "a", "status": "failed", "error": "x"}) == "failed"


@pytest.mark.parametrize("body", [[], {"data": "x"}, {"object": "list"}, None])
def test_unexpected_answers_raise_invalid_response(body: object) -> None:
    with pytest.raises(modelplex.InvalidResponseError, match="unexpected answer"):
        calls.list_models().parse(body)


def test_stream_data_parsing() -> None:
    assert streams.is_stream_end("[DONE]")
    assert not streams.is_stream_end('{"choices": []}')
    assert streams.stream_chunks('{"choices": []}') == [{"choices": []}]
    assert streams.stream_chunks("") == []
    with pytest.raises(modelplex.InvalidResponseError):
        streams.stream_chunks("not json")
    with pytest.raises(modelplex.ModelplexError, match="boom"):
        streams.stream_chunks('{"error": {"message": "boom"}}')


def test_chunk_text_reads_chat_and_completion_chunks() -> None:
    assert streams.chunk_text({"choices": [{"delta": {"content": "Hel"}}]}) == "Hel"
    assert streams.chunk_text({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert streams.chunk_text({"choices": [{"text": "lo"}]}) == "lo"
    assert streams.chunk_text({"choices": [], "usage": {"total_tokens": 3}}) == ""


def test_responses_and_messages_calls() -> None:
    assert calls.create_response({"input": "x", "stream": True}, "m").body == {"input": "x", "model": "m"}
    assert calls.stream_response({"input": "x"}).body == {"input": "x", "stream": True}
    assert calls.get_response("resp_1").path == "/v1/responses/resp_1"
    assert calls.delete_response("resp_1").method == "DELETE"
    with pytest.raises(ValueError, match="not a response id"):
        calls.get_response("../v1/models")
    assert calls.create_message({"max_tokens": 4, "messages": []}).path == "/v1/messages"
    assert calls.stream_message({"messages": []}).read is streams.read_message_event
    count = calls.count_message_tokens({"messages": []}, "m")
    assert (count.path, count.body, count.parse({"input_tokens": 7})) == (
        "/v1/messages/count_tokens",
        {"messages": [], "model": "m"},
        7,
    )
    with pytest.raises(modelplex.InvalidResponseError):
        calls.delete_response("r").parse({"deleted": False})


def test_responses_and_messages_stream_readers() -> None:
    delta = {"type": "response.output_text.delta", "delta": "Hi"}
    assert streams.read_response_event("response.output_text.delta", json.dumps(delta)) == ([delta], False)
    done = {"type": "response.incomplete", "response": {}}
    assert streams.read_response_event("", json.dumps(done)) == ([done], True)
    failed = {
        "type": "response.failed",
        "response": {"error": {"code": "rate_limit_exceeded", "message": "slow"}},
    }
    with pytest.raises(modelplex.RateLimitError, match="slow"):
        streams.read_response_event("response.failed", json.dumps(failed))
    with pytest.raises(modelplex.InternalServerError, match="boom"):
        streams.read_response_event("error", json.dumps({"type": "error", "code": None, "message": "boom"}))

    assert streams.read_message_event("ping", '{"type": "ping"}') == ([], False)
    stop = {"type": "message_stop"}
    assert streams.read_message_event("message_stop", json.dumps(stop)) == ([stop], True)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "loading"}}
    with pytest.raises(modelplex.ServiceUnavailableError, match="loading"):
        streams.read_message_event("error", json.dumps(error))
    assert (
        streams.chunk_text({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "a"}})
        == "a"
    )
    assert (
        streams.chunk_text(
            {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": "{"}}
        )
        == ""
    )
    assert streams.chunk_text(delta) == "Hi"
