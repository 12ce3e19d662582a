"""Hostile input against a real runtime: a corpus of bodies that once gave 500s or were accepted when
they should not be, each a 4xx in the OpenAI error shape; then schemathesis over the OpenAPI schema."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from helpers.fuzz import run_schemathesis

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "hi"}]
JSON = {"content-type": "application/json"}

# (path, raw body, headers, expected status)
CORPUS: list[tuple[str, bytes, dict[str, str], int]] = [
    ("/v1/chat/completions", b"[" * 30_000 + b"]" * 30_000, JSON, 400),  # within the fixture's 64 KiB body limit
    ("/v1/chat/completions", b'{"messages": [' * 3000, JSON, 400),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', JSON, 400),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}', JSON, 400),
    ("/v1/completions", b'{"prompt": "x\\ud800y"}', JSON, 400),
    ("/v1/embeddings", b'{"input": ["ok", "\\udc00"]}', JSON, 400),
    ("/tokenize", b'{"text": "\\ud83d"}', JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "seed": 2**63}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "seed": -(2**63) - 1}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "seed": 2**63, "stream": True}).encode(), JSON, 400),
    ("/v1/completions", json.dumps({"prompt": "x", "seed": 10**30, "stream": True}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "max_tokens": True}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "stream": "yes"}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "stop": [""]}).encode(), JSON, 400),
    ("/v1/completions", json.dumps({"prompt": "x", "stop": ""}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "temperature": True}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "n": "2"}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "logprobs": 1}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "logit_bias": {"1": 1000}}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "logit_bias": {"99999999": 1}}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "response_format": {"type": "json_schema"}}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}).encode(), JSON, 400),
    ("/v1/chat/completions", json.dumps({"messages": MSGS, "tools": [{"type": "function", "function": {
        "name": "bad name!"}}]}).encode(), JSON, 400),
    ("/v1/completions", json.dumps({"prompt": [1, "a"]}).encode(), JSON, 400),
    ("/v1/completions", json.dumps({"prompt": [[]]}).encode(), JSON, 400),
    ("/v1/completions", json.dumps({"prompt": ["hello", ""]}).encode(), JSON, 400),  # once hung the packed path
    ("/v1/completions", json.dumps({"prompt": [[5, 6], []]}).encode(), JSON, 400),
    ("/v1/chat/completions", b'{"messages": []}', {"content-type": "text/plain"}, 415),
    ("/v1/chat/completions", b'{"messages": []}', {}, 415),
    ("/v1/embeddings", b"input=hi", {"content-type": "application/x-www-form-urlencoded"}, 415),
    ("/v1/chat/completions", b"\xff\xfe{}", JSON, 400),
    ("/v1/chat/completions", b"", JSON, 400),
    ("/v1/chat/completions", b"null", JSON, 400),
    ("/v1/chat/completions", b'"just a string"', JSON, 400),
]


def test_the_hostile_corpus_gets_4xx_in_the_openai_shape(llama_runtime) -> None:  # type: ignore[no-untyped-def]
    for path, body, headers, status in CORPUS:
        r = httpx.post(llama_runtime.url + path, content=body, headers=headers, timeout=30)
        assert r.status_code == status, (path, body[:80], r.status_code, r.text[:300])
        assert not r.headers["content-type"].startswith("text/event-stream")  # a clean 400, not a cut stream
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and "type" in error and "param" in error
    assert llama_runtime.proc.poll() is None
    assert httpx.get(llama_runtime.url + "/health").status_code == 200


def test_fuzzing_the_runtime_finds_no_server_error(llama_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_schemathesis(llama_runtime.url, max_examples=8, workdir=tmp_path)
    assert llama_runtime.proc.poll() is None
    assert "Traceback" not in llama_runtime.logs()
