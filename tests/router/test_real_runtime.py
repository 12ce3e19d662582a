"""The router in front of real runtimes and tiny models: the seed's curl examples as written, the
official openai client, the SDK, unloading that frees the process, auto-reload.

The seed's model ids (meta-llama/Llama-3.2-3B-Instruct, Qwen/Qwen3-4B) resolve to the tiny test model
through an offline Hugging Face cache, so the examples run verbatim and the hub loading path is real.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import psutil
import pytest

import modelplex
from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

SNAPSHOT = "0" * 40
SEED_CONFIG = {
    "llama3-3b": {"alias": "llama3-3b", "Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "qwen3-4b": {"alias": "qwen3-4b", "Plain": {"model_id": "Qwen/Qwen3-4B"}},
}
HELLO = {"messages": [{"role": "user", "content": "Hello!"}]}


def _offline_hub(root: Path, repos: list[str], model_dir: Path) -> Path:
    """A Hugging Face hub cache holding ``model_dir`` under each repo id."""
    for repo in repos:
        entry = root / f"models--{repo.replace('/', '--')}"
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text(SNAPSHOT)
        (entry / "snapshots").mkdir()
        (entry / "snapshots" / SNAPSHOT).symlink_to(model_dir, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def seed_router(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, minilm_dir: Path
) -> Iterator[RouterProcess]:
    work = tmp_path_factory.mktemp("seed-router")
    hub = _offline_hub(work / "hub", ["meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen3-4B"], tiny_llama_dir)
    config = {**SEED_CONFIG, "minilm": {"alias": "minilm", "Embedding": {"model_id": str(minilm_dir)}}}
    router = start_router(
        work / "router",
        config,
        fake=False,
        env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "MODELPLEX_ROUTER_MONITOR_INTERVAL": "1"},
    )
    yield router
    router.stop()


def test_seed_curl_examples_as_written(seed_router: RouterProcess) -> None:
    router = seed_router
    # curl http://localhost:1234/v1/chat/completions -d '{"model": "llama3-3b", "messages": [...]}'
    reply = router.post("/v1/chat/completions", {"model": "llama3-3b", **HELLO, "max_tokens": 4})
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "llama3-3b"
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    # "model": "default"
    reply = router.post("/v1/chat/completions", {"model": "default", **HELLO, "max_tokens": 4})
    assert reply.status_code == 200 and reply.json()["model"] == "llama3-3b"

    listing = router.get("/v1/models").json()
    assert [m["id"] for m in listing["data"]] == ["default", "llama3-3b", "qwen3-4b", "minilm"]
    assert listing["data"][1]["status"] == "loaded"

    [runtime] = router.runtime_processes()
    rss_before = runtime.memory_info().rss
    assert rss_before > 0
    assert router.post("/v1/models/unload", {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}).json() == {
        "model_id": "meta-llama/Llama-3.2-3B-Instruct",
        "status": "unloaded",
    }
    # Unloading really frees the memory: the runtime process is gone.
    assert not runtime.is_running()
    assert router.runtime_processes() == []
    assert router.metric("modelplex_model_memory_bytes", model="llama3-3b") == 0
    assert router.post("/v1/models/status", {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}).json() == {
        "model_id": "meta-llama/Llama-3.2-3B-Instruct",
        "status": "unloaded",
    }
    assert router.post("/v1/models/reload", {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}).json() == {
        "model_id": "meta-llama/Llama-3.2-3B-Instruct",
        "status": "loaded",
    }
    assert router.post("/v1/models/status", {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}).json() == {
        "model_id": "meta-llama/Llama-3.2-3B-Instruct",
        "status": "loaded",
    }

    # Auto-reload: unload, then a request brings the model back.
    assert router.post("/v1/models/unload", {"model_id": "llama3-3b"}).json()["status"] == "unloaded"
    reply = router.post("/v1/chat/completions", {**HELLO, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["model"] == "llama3-3b"
    assert router.metric("modelplex_model_loads_total", model="llama3-3b", result="success") == 3


def test_openai_client_chat_completions_embeddings(seed_router: RouterProcess) -> None:
    client = openai.OpenAI(base_url=f"{seed_router.url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(model="qwen3-4b", messages=HELLO["messages"], max_tokens=4)
    assert chat.model == "qwen3-4b" and chat.usage.completion_tokens <= 4
    chunks = list(
        client.chat.completions.create(
            model="Qwen/Qwen3-4B", messages=HELLO["messages"], max_tokens=4, stream=True
        )
    )
    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")
    text = client.completions.create(model="llama3-3b", prompt="The quick brown", max_tokens=3)
    assert text.choices[0].text is not None
    streamed = list(
        client.completions.create(model="llama3-3b", prompt="The quick", max_tokens=3, stream=True)
    )
    assert streamed
    emb = client.embeddings.create(model="minilm", input=["one endpoint", "many models"])
    assert [len(d.embedding) for d in emb.data] == [384, 384]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="all-MiniLM", input="x")


def test_sdk_against_the_router(seed_router: RouterProcess) -> None:
    with modelplex.Client(seed_router.url) as client:
        assert client.list_models() == ["llama3-3b", "qwen3-4b", "minilm"]
        assert client.get_default_model_id() == "llama3-3b"
        reply = client.send_chat_completion_request({**HELLO, "max_tokens": 2}, model_id="qwen3-4b")
        assert reply["model"] == "qwen3-4b"
        pieces = list(client.stream_chat_completion_request({**HELLO, "max_tokens": 3}))
        assert pieces
        tokens = client.tokenize_text("Hello world", model_id="llama3-3b")
        assert tokens and isinstance(client.detokenize_text(tokens, model_id="llama3-3b"), str)
        assert client.unload_model("qwen3-4b") == "unloaded"
        assert client.is_model_loaded("qwen3-4b") is False
        assert client.reload_model("qwen3-4b") == "loaded"
        with pytest.raises(modelplex.ModelNotFoundError):
            client.model_status("nope")


def _runtime_url(router: RouterProcess, model: str) -> str:
    """The address of the runtime the router last started for ``model`` (from its start log line)."""
    ports = re.findall(rf"started runtime for {re.escape(model)} on port (\d+) ", router.log_path.read_text())
    return f"http://127.0.0.1:{ports[-1]}"


def _sample(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + " "))


def test_embedding_clients_that_leave_free_the_runtime(seed_router: RouterProcess) -> None:
    """50 clients send 64 texts each through the router and leave once their requests are at the runtime:
    the router closes what it forwarded, and the runtime's counters show it skipped their work (it would
    have embedded 3200 texts)."""
    router = seed_router
    assert router.post("/v1/embeddings", {"model": "minilm", "input": "warm up"}).status_code == 200
    runtime = _runtime_url(router, "minilm")
    inputs, cancelled = "modelplex_runtime_embedding_inputs_total", "modelplex_runtime_cancelled_requests_total"
    before = httpx.get(runtime + "/metrics").text
    texts = [f"sentence number {i} about guitars, markets and the weather in many words " * 6 for i in range(64)]
    body = json.dumps({"model": "minilm", "input": texts}).encode()
    request = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    port = int(router.url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(request)
        router.wait_for(lambda: router.metric("modelplex_requests_in_flight", model="minilm") == 50,
                        timeout=60, what="50 embedding requests forwarded")
    finally:
        for sock in socks:
            sock.close()
    router.wait_for(lambda: router.metric("modelplex_requests_in_flight", model="minilm") == 0,
                    timeout=60, what="the forwarded requests closed")
    # The runtime takes embedding jobs in order: once a later request is answered, every earlier job has
    # been computed or skipped.
    assert router.post("/v1/embeddings", {"model": "minilm", "input": "still serving"}).status_code == 200
    after = httpx.get(runtime + "/metrics").text
    embedded = _sample(after, inputs) - _sample(before, inputs) - 1
    skipped = _sample(after, cancelled) - _sample(before, cancelled)
    assert skipped >= 40 and embedded <= 10 * 64, (skipped, embedded)  # of 50 x 64 texts, a few batches ran
    assert router.metric("modelplex_requests_total", model="minilm", code="499") >= skipped


def test_shutdown_leaves_no_runtime(router_factory, tiny_llama_dir: Path) -> None:
    config = {"t": {"alias": "t", "Plain": {"model_id": str(tiny_llama_dir)}, "pinned": True}}
    router = router_factory(config, fake=False)
    router.wait_for(lambda: router.statuses()["t"] == "loaded", timeout=120, what="pinned load")
    [runtime] = router.runtime_processes()
    router.stop()  # asserts that every runtime exited with the router
    assert not psutil.pid_exists(runtime.pid) or runtime.status() == psutil.STATUS_ZOMBIE


def test_the_example_config_serves_the_readme_calls(
    router_factory, tmp_path: Path, tiny_llama_dir: Path, minilm_dir: Path
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    work = tmp_path / "examples"
    (work / "models").mkdir(parents=True)
    # What examples/quickstart.sh builds and links, next to a copy of the example config.
    (work / "models" / "tiny-llama").symlink_to(tiny_llama_dir, target_is_directory=True)
    (work / "models" / "all-minilm-l6-v2").symlink_to(minilm_dir, target_is_directory=True)
    router = router_factory(
        (examples / "config.json").read_text(), fake=False, config_name="../examples/config.json"
    )
    assert [m["id"] for m in router.get("/v1/models").json()["data"]] == [
        "default",
        "tiny-chat",
        "all-minilm-l6-v2",
    ]
    chat = router.post("/v1/chat/completions", {"model": "tiny-chat", **HELLO, "max_tokens": 8})
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] <= 8
    assert (
        router.post("/v1/chat/completions", {"model": "default", **HELLO, "max_tokens": 8}).json()["model"]
        == "tiny-chat"
    )
    emb = router.post("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "one endpoint, many models"})
    assert len(emb.json()["data"][0]["embedding"]) == 384
    for verb, status in [("unload", "unloaded"), ("status", "unloaded"), ("reload", "loaded")]:
        assert router.post(f"/v1/models/{verb}", {"model_id": "tiny-chat"}).json() == {
            "model_id": "tiny-chat",
            "status": status,
        }


def test_openai_responses_api_against_real_runtimes(seed_router: RouterProcess) -> None:
    client = openai.OpenAI(base_url=f"{seed_router.url}/v1", api_key="unused", max_retries=0)
    first = client.responses.create(
        model="qwen3-4b", input="Hello!", max_output_tokens=4, instructions="Be brief."
    )
    assert first.model == "qwen3-4b" and first.status in ("completed", "incomplete")
    assert first.output[0].type == "message" and 1 <= first.usage.output_tokens <= 4
    assert first.status == "completed" or first.incomplete_details.reason == "max_output_tokens"

    # (A cut answer ends with response.incomplete: the SDK's stream helper only accepts completed ones.)
    events = list(
        client.responses.create(model="llama3-3b", input="Hello!", max_output_tokens=6, stream=True)
    )
    assert events[0].type == "response.created" and events[-1].type in (
        "response.completed",
        "response.incomplete",
    )
    streamed = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert streamed.output_text == "".join(deltas) and 1 <= streamed.usage.output_tokens <= 6

    # The follow-up's prompt holds the earlier turn: more input tokens than the same question alone.
    follow = client.responses.create(
        model="qwen3-4b", input="And then?", previous_response_id=first.id, max_output_tokens=2
    )
    alone = client.responses.create(model="qwen3-4b", input="And then?", max_output_tokens=2, store=False)
    assert follow.previous_response_id == first.id
    assert follow.usage.input_tokens > alone.usage.input_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text


def test_anthropic_messages_api_against_real_runtimes(seed_router: RouterProcess) -> None:
    client = anthropic.Anthropic(base_url=seed_router.url, api_key="unused", max_retries=0)
    conversation = [{"role": "user", "content": "Hello!"}]
    message = client.messages.create(
        model="llama3-3b", max_tokens=5, system="Be brief.", messages=conversation
    )
    assert message.model == "llama3-3b" and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens") and 1 <= message.usage.output_tokens <= 5

    with client.messages.stream(model="Qwen/Qwen3-4B", max_tokens=6, messages=conversation) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.model == "qwen3-4b" and final.content[0].text == text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens <= 6

    # count_tokens renders the same prompt the model is given: it matches the answer's input tokens.
    counted = client.messages.count_tokens(model="llama3-3b", system="Be brief.", messages=conversation)
    assert counted.input_tokens == message.usage.input_tokens
