"""A real runtime serving all-MiniLM-L6-v2: similarity, formats, batching and kind errors."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest

from helpers.runtime_process import RuntimeProcess

pytestmark = pytest.mark.integration


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_paraphrases_score_higher_than_unrelated(minilm_runtime: RuntimeProcess) -> None:
    client = openai.OpenAI(base_url=minilm_runtime.url + "/v1", api_key="unused", max_retries=0)
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    resp = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64 and decodes it
    vecs = [d.embedding for d in resp.data]
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert len(vecs[0]) == 384
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2]) + 0.2
    assert abs(math.sqrt(sum(x * x for x in vecs[0])) - 1.0) < 1e-4
    assert resp.usage.prompt_tokens > 0 and resp.usage.total_tokens == resp.usage.prompt_tokens


def test_float_and_base64_agree(minilm_runtime: RuntimeProcess) -> None:
    url = minilm_runtime.url + "/v1/embeddings"
    as_float = httpx.post(url, json={"input": "hello world", "encoding_format": "float"}).json()
    as_b64 = httpx.post(url, json={"input": ["hello world"], "encoding_format": "base64"}).json()
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert max(abs(a - b) for a, b in zip(decoded, as_float["data"][0]["embedding"], strict=True)) < 1e-5
    assert as_float["object"] == "list" and as_float["model"] == "minilm"


def test_embedding_model_refuses_chat_and_bad_input(minilm_runtime: RuntimeProcess) -> None:
    url = minilm_runtime.url
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "Embedding" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/embeddings", json={"input": 42})
    assert r.status_code == 400 and "input" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/embeddings", json={"input": "word " * 600})
    assert r.status_code == 400 and "256" in r.json()["error"]["message"]
    models = httpx.get(url + "/v1/models").json()["data"][0]
    assert models["kind"] == "Embedding" and models["max_model_len"] == 256


def test_dimensions_need_a_matryoshka_model(minilm_runtime: RuntimeProcess) -> None:
    url = minilm_runtime.url + "/v1/embeddings"
    r = httpx.post(url, json={"input": "hi", "dimensions": 128})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions" and "384" in r.json()["error"]["message"]
    assert httpx.post(url, json={"input": "hi", "dimensions": 384}).status_code == 200  # its own size is a no-op
    r = httpx.post(url, json={"input": [[1, 2, 3]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_clients_that_leave_are_not_computed(minilm_runtime: RuntimeProcess) -> None:
    import json
    import socket
    import time

    url = minilm_runtime.url
    before = httpx.get(url + "/metrics").text
    texts = [f"sentence number {i} about guitars, markets and the weather in many words " * 6 for i in range(64)]
    body = json.dumps({"input": texts}).encode()
    request = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", minilm_runtime.port))
        sock.sendall(request)
        socks.append(sock)
    for sock in socks:
        sock.close()

    def settled() -> tuple[float, float]:
        text = httpx.get(url + "/metrics").text
        return (_metric(text, "modelplex_runtime_embedding_inputs_total") - _metric(before, "modelplex_runtime_embedding_inputs_total"),
                _metric(text, "modelplex_runtime_cancelled_requests_total") - _metric(before, "modelplex_runtime_cancelled_requests_total"))

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and settled()[1] < 45:
        time.sleep(0.2)
    time.sleep(1.0)
    embedded, cancelled = settled()
    assert cancelled >= 45, (embedded, cancelled)
    assert embedded <= 5 * 64, (embedded, cancelled)  # of 50 x 64 texts sent, at most a few batches ran
    assert httpx.post(url + "/v1/embeddings", json={"input": "still serving"}).status_code == 200
