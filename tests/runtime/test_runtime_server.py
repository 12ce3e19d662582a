"""A real runtime process serving the tiny Llama, driven by the openai client and httpx."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import openai
import pytest

from helpers.runtime_process import RuntimeProcess, start_runtime

pytestmark = pytest.mark.integration


def client(rt: RuntimeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=rt.url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_with_openai_client(llama_runtime: RuntimeProcess) -> None:
    resp = client(llama_runtime).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Hello!"}], max_tokens=7, temperature=0
    )
    assert resp.model == "tiny-chat"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert resp.usage is not None
    assert resp.usage.completion_tokens <= 7
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert choice.finish_reason == ("length" if resp.usage.completion_tokens == 7 else "stop")


def test_prompt_tokens_match_tokenize(llama_runtime: RuntimeProcess) -> None:
    messages = [{"role": "user", "content": "The quick brown fox"}]
    tok = httpx.post(llama_runtime.url + "/tokenize", json={"messages": messages}).json()
    resp = client(llama_runtime).chat.completions.create(model="default", messages=messages, max_tokens=2)
    assert resp.usage is not None and resp.usage.prompt_tokens == tok["count"] == len(tok["tokens"])
    assert tok["max_model_len"] == 2048


def test_streaming_chat_ends_with_usage(llama_runtime: RuntimeProcess) -> None:
    stream = client(llama_runtime).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=12, stream=True,
        stream_options={"include_usage": True}, temperature=0.8, seed=3,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 12 or finishes == ["stop"]
    plain = client(llama_runtime).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=12, temperature=0.8, seed=3
    )
    assert plain.choices[0].message.content == text  # same seed, same tokens, streamed or not


def test_raw_sse_stream_ends_with_done(llama_runtime: RuntimeProcess) -> None:
    with httpx.stream("POST", llama_runtime.url + "/v1/completions",
                      json={"prompt": "Hello", "max_tokens": 4, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(p["object"] == "text_completion" for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_completions_and_seeded_sampling(llama_runtime: RuntimeProcess) -> None:
    c = client(llama_runtime)
    a = c.completions.create(model="tiny-chat", prompt="Models are", max_tokens=10, temperature=1.0, top_p=0.9, seed=42)
    b = c.completions.create(model="tiny-chat", prompt="Models are", max_tokens=10, temperature=1.0, top_p=0.9, seed=42)
    assert a.choices[0].text == b.choices[0].text
    assert a.object == "text_completion"
    default_len = c.completions.create(model="tiny-chat", prompt="Models are", temperature=0)
    assert default_len.usage is not None and default_len.usage.completion_tokens <= 16


def test_stop_string_cuts_text(llama_runtime: RuntimeProcess) -> None:
    c = client(llama_runtime)
    full = c.completions.create(model="tiny-chat", prompt="Hello", max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    text = full.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip()
    cut = c.completions.create(model="tiny-chat", prompt="Hello", max_tokens=30, temperature=0, stop=[stop],
                               extra_body={"ignore_eos": True})
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


def test_greedy_stream_equals_non_stream(llama_runtime: RuntimeProcess) -> None:
    c = client(llama_runtime)
    kwargs = {"model": "tiny-chat", "prompt": "Models are loaded", "max_tokens": 40, "temperature": 0,
              "extra_body": {"ignore_eos": True}}
    whole = c.completions.create(**kwargs).choices[0].text  # type: ignore[call-overload]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kwargs) if ch.choices)  # type: ignore[call-overload]
    assert streamed == whole and len(whole) > 0


def test_concurrent_requests_are_batched(llama_runtime: RuntimeProcess) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=llama_runtime.url, timeout=60) as ac:
            reqs = [ac.post("/v1/completions", json={"prompt": f"Hello {i}", "max_tokens": 24, "temperature": 0,
                                                     "ignore_eos": True}) for i in range(8)]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    assert all(r.json()["usage"]["completion_tokens"] == 24 for r in responses)
    metrics = httpx.get(llama_runtime.url + "/metrics").text
    count = _metric(metrics, "modelplex_runtime_batch_size_count")
    single = _metric(metrics, 'modelplex_runtime_batch_size_bucket{le="1.0"}')
    assert count > single  # some decode steps ran more than one sequence


def test_client_disconnect_stops_generation(llama_runtime: RuntimeProcess) -> None:
    url = llama_runtime.url
    before = _metric(httpx.get(url + "/metrics").text, "modelplex_runtime_cancelled_requests_total")
    with httpx.stream("POST", url + "/v1/completions",
                      json={"prompt": "Hi", "max_tokens": 2000, "stream": True, "ignore_eos": True}) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i > 3:
                break

    def stopped() -> bool:
        text = httpx.get(url + "/metrics").text
        return (_metric(text, "modelplex_runtime_cancelled_requests_total") == before + 1
                and _metric(text, "modelplex_runtime_running_requests") == 0)

    assert _wait_for(stopped)


def test_non_streaming_disconnect_stops_generation(llama_runtime: RuntimeProcess) -> None:
    url = llama_runtime.url
    before = _metric(httpx.get(url + "/metrics").text, "modelplex_runtime_cancelled_requests_total")
    body = json.dumps({"prompt": "Hi", "max_tokens": 2000, "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", llama_runtime.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert _wait_for(lambda: _metric(httpx.get(url + "/metrics").text, "modelplex_runtime_running_requests") == 1)
    assert _wait_for(lambda: _metric(httpx.get(url + "/metrics").text,
                                     "modelplex_runtime_cancelled_requests_total") == before + 1)
    assert _wait_for(lambda: _metric(httpx.get(url + "/metrics").text, "modelplex_runtime_running_requests") == 0)


def test_errors_are_openai_shaped(llama_runtime: RuntimeProcess) -> None:
    url = llama_runtime.url
    chat = url + "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]

    r = httpx.post(chat, json={"messages": msgs, "max_tokens": "many"})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "max_tokens"

    r = httpx.post(chat, json={"messages": msgs, "max_tokens": 2, "some_future_field": {"x": 1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "some_future_field"
    r = httpx.post(chat, json={"messages": msgs, "max_tokens": 2, "user": "u", "metadata": {"k": "v"}})
    assert r.status_code == 200  # informational fields are tolerated

    r = httpx.post(chat, json={"model": "gpt-4", "messages": msgs})
    assert r.status_code == 404 and "tiny-chat" in r.json()["error"]["message"]

    r = httpx.post(chat, json={"messages": msgs, "n": 9})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"  # above --max-batch-size 8

    r = httpx.post(chat, json={"messages": msgs, "max_tokens": 5000})
    assert r.status_code == 400
    assert "2048" in r.json()["error"]["message"] and "5000" in r.json()["error"]["message"]

    long_prompt = "fox " * 3000
    r = httpx.post(url + "/v1/completions", json={"prompt": long_prompt})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "2048" in r.json()["error"]["message"]

    r = httpx.post(url + "/v1/completions", json={"prompt": [5, 10**7], "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(url + "/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3

    r = httpx.post(chat, content=b"x" * 70000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "65536" in r.json()["error"]["message"]

    r = httpx.post(chat, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()

    r = httpx.post(url + "/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 400 and "Plain" in r.json()["error"]["message"]

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    r = httpx.post(chat, json={"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}]})
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]

    r = httpx.get(url + "/nope")
    assert r.status_code == 404 and "error" in r.json()

    with pytest.raises(openai.BadRequestError):
        client(llama_runtime).chat.completions.create(model="tiny-chat", messages=msgs, temperature=7)
    assert httpx.get(url + "/health").status_code == 200  # still alive


def test_tokenize_detokenize_models_metrics(llama_runtime: RuntimeProcess) -> None:
    url = llama_runtime.url
    tok = httpx.post(url + "/tokenize", json={"text": "Hello world", "add_special_tokens": False}).json()
    assert tok["count"] == len(tok["tokens"]) > 0
    assert httpx.post(url + "/detokenize", json={"tokens": tok["tokens"]}).json() == {"text": "Hello world"}
    assert httpx.post(url + "/detokenize", json={"tokens": [10**9]}).status_code == 400

    models = httpx.get(url + "/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == "tiny-chat" and card["kind"] == "Plain" and card["max_model_len"] == 2048
    assert card["owned_by"] == "modelplex"
    listed = client(llama_runtime).models.list()
    assert [m.id for m in listed] == ["tiny-chat"]

    ready = httpx.get(url + "/ready").json()
    assert ready["status"] == "ready" and ready["load_seconds"] > 0

    metrics = httpx.get(url + "/metrics").text
    for name in ("modelplex_runtime_requests_total", "modelplex_runtime_prompt_tokens_total",
                 "modelplex_runtime_generation_tokens_total", "modelplex_runtime_time_to_first_token_seconds",
                 "modelplex_runtime_time_per_output_token_seconds", "modelplex_runtime_queue_depth",
                 "modelplex_runtime_model_load_seconds", "modelplex_runtime_kv_cache_bytes",
                 "modelplex_runtime_kv_cache_budget_bytes", "modelplex_runtime_kv_cache_tokens",
                 "modelplex_runtime_preempted_sequences_total"):
        assert name in metrics


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name) and "{" in name and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def _wait_for(check: object, timeout: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_stream_interval_sends_tokens_in_fewer_chunks_with_the_same_text(tiny_llama_dir: Path) -> None:
    body = {"prompt": "Models are loaded", "max_tokens": 48, "temperature": 0, "ignore_eos": True}
    entry = {"Plain": {"model_id": str(tiny_llama_dir)}, "alias": "tiny-chat"}

    def stream(url: str) -> list[dict[str, object]]:
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: {")]
        return [json.loads(line.removeprefix("data: "))["choices"][0] for line in lines]

    # With a 1 s interval the tokens between the first and the last wait for the finish (or the
    # interval's end), so 48 tokens arrive in a handful of chunks. The first stream's delivery starts
    # the interval; the second stream's first text goes out at once anyway instead of waiting for the
    # rest of it (then everything would come as one chunk with the finish).
    with start_runtime(entry, extra_args=["--stream-interval-ms", "1000"]) as rt:
        stream(rt.url)
        chunks = stream(rt.url)
        plain = httpx.post(rt.url + "/v1/completions", json=body, timeout=60).json()
    assert chunks[-1]["finish_reason"] == "length"
    assert "".join(str(c["text"]) for c in chunks) == plain["choices"][0]["text"]
    assert plain["usage"]["completion_tokens"] == 48
    assert 2 <= len(chunks) < 48


def test_n_logprobs_and_several_prompts(llama_runtime: RuntimeProcess) -> None:
    c = client(llama_runtime)
    resp = c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], n=2,
                                     max_tokens=5, temperature=1.0, seed=4, logprobs=True, top_logprobs=2,
                                     presence_penalty=0.5, frequency_penalty=0.5, extra_body={"ignore_eos": True})
    assert [ch.index for ch in resp.choices] == [0, 1]
    assert resp.choices[0].message.content != resp.choices[1].message.content
    assert resp.usage is not None and resp.usage.completion_tokens == 10
    for ch in resp.choices:
        assert ch.logprobs is not None and len(ch.logprobs.content or []) == 5
        first = (ch.logprobs.content or [])[0]
        assert len(first.top_logprobs) == 2 and first.logprob <= 0 and first.bytes
        assert "".join(t.token for t in ch.logprobs.content or []) == ch.message.content
    plain = c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.refusal is None

    streamed = c.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], n=2,
                                         max_tokens=5, temperature=1.0, seed=4, logprobs=True, top_logprobs=2,
                                         presence_penalty=0.5, frequency_penalty=0.5, stream=True,
                                         extra_body={"ignore_eos": True})
    texts = {0: "", 1: ""}
    tokens = {0: 0, 1: 0}
    for chunk in streamed:
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
            tokens[ch.index] += len(ch.logprobs.content or []) if ch.logprobs else 0
    assert texts == {0: resp.choices[0].message.content, 1: resp.choices[1].message.content}
    assert tokens == {0: 5, 1: 5}

    many = c.completions.create(model="tiny-chat", prompt=["Hello", "The quick"], n=2, max_tokens=4, logprobs=2,
                                temperature=0, extra_body={"ignore_eos": True})
    assert [ch.index for ch in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text  # greedy: the two samples of a prompt agree
    lp = many.choices[2].logprobs
    assert lp is not None and len(lp.tokens or []) == 4 and len(lp.top_logprobs or []) == 4
    assert lp.text_offset == [0, *[sum(len(t) for t in (lp.tokens or [])[:i]) for i in range(1, 4)]]
    solo = c.completions.create(model="tiny-chat", prompt="The quick", max_tokens=4, temperature=0,
                                extra_body={"ignore_eos": True})
    assert solo.choices[0].text == many.choices[2].text
    assert many.usage is not None and many.usage.completion_tokens == 16


def test_a_full_queue_answers_429_with_retry_after(tiny_llama_dir: Path) -> None:
    entry = {"Plain": {"model_id": str(tiny_llama_dir)}}
    body = {"prompt": "Hi", "max_tokens": 400, "ignore_eos": True}
    with start_runtime(entry, extra_args=["--max-batch-size", "1", "--max-waiting-requests", "1"]) as rt:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=rt.url, timeout=120) as ac:
                return list(await asyncio.gather(*[ac.post("/v1/completions", json=body) for _ in range(4)]))

        statuses = sorted(r.status_code for r in asyncio.run(burst()))
        refused = [r for r in asyncio.run(burst()) if r.status_code == 429]
    assert statuses == [200, 200, 429, 429]
    assert refused and refused[0].headers["retry-after"] == "1"
    assert refused[0].json()["error"]["code"] == "queue_full"
