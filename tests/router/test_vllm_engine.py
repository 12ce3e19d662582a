"""vLLM as an engine beside the transformers runtime: one ``modelplex from-config`` router serving a
vLLM-engine model and a transformers-engine model side by side (vLLM's CPU build, random-weight models of
a shape its CPU attention supports), running the seed's flows on both.

A vLLM start costs tens of seconds here, so every test shares one router process (module scope) and the
tests run in order: the first request loads the vLLM model, later ones unload, reload and crash it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import psutil
import pytest

from helpers.vllm import CPU_ENGINE_ARGS, CPU_ENV, make_vllm_llama, vllm_python
from router.harness import RouterProcess, start_router

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, minilm_dir: Path) -> Iterator[RouterProcess]:
    work = tmp_path_factory.mktemp("vllm-engine")
    model = make_vllm_llama(work / "llama-256")
    broken = work / "broken"
    broken.mkdir()
    for item in model.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')
    vllm = {"engine": "vllm", "engine_args": CPU_ENGINE_ARGS}
    config = {
        "vllm-chat": {"alias": "vllm-chat", "Plain": {"model_id": str(model), "max_seq_len": 512}, "tool_call_parser": "hermes", **vllm},
        "tf-chat": {"alias": "tf-chat", "Plain": {"model_id": str(tiny_llama_dir)}},
        "vllm-broken": {"alias": "vllm-broken", "Plain": {"model_id": str(broken)}, **vllm},
        "vllm-embed": {"alias": "vllm-embed", "Embedding": {"model_id": str(minilm_dir)}, **vllm},
        "tf-embed": {"alias": "tf-embed", "Embedding": {"model_id": str(minilm_dir)}},
    }
    router = start_router(
        work / "router",
        config,
        fake=False,
        # A spare runtime waits for transformers models; vLLM models must not take it.
        args=["--vllm-python", vllm_python(), "--spare-runtimes", "1"],
        env={**CPU_ENV, "MODELPLEX_ROUTER_MONITOR_INTERVAL": "0.5", "MODELPLEX_ROUTER_STOP_GRACE_SECONDS": "30"},
    )
    yield router
    router.stop()


def _client(router: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=600)


def _vllm_tree(router: RouterProcess) -> list[psutil.Process]:
    """The vLLM API server of the router and every process below it (engine core, workers)."""
    servers = [p for p in router.runtime_processes() if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())]
    return [proc for server in servers for proc in (server, *server.children(recursive=True))]


def _shared_memory(tree: list[psutil.Process]) -> set[str]:
    """The /dev/shm files the processes map or hold open (vLLM passes messages through shared memory)."""
    paths: set[str] = set()
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            paths.update(m.path for m in proc.memory_maps() if m.path.startswith("/dev/shm/"))
            paths.update(f.path for f in proc.open_files() if f.path.startswith("/dev/shm/"))
    return paths


def test_models_are_listed_unloaded_with_their_engines(router: RouterProcess) -> None:
    assert router.statuses() == {
        "default": "",
        "vllm-chat": "unloaded",
        "tf-chat": "unloaded",
        "vllm-broken": "unloaded",
        "vllm-embed": "unloaded",
        "tf-embed": "unloaded",
    }
    assert router.metric("modelplex_model_status", model="vllm-chat", engine="vllm", status="unloaded") == 1
    assert router.metric("modelplex_model_status", model="tf-chat", engine="transformers", status="unloaded") == 1


def test_a_cold_stream_gets_loading_comments_then_vllms_tokens(router: RouterProcess) -> None:
    body = {"model": "vllm-chat", "messages": HELLO, "max_tokens": 8, "stream": True}
    comments, events = [], []
    with router.client(timeout=600) as c, c.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert comments and comments[0].startswith(": loading vllm-chat")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(chunk["model"] == "vllm-chat" for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert router.statuses()["vllm-chat"] == "loaded"
    # vLLM's tree: API server, engine core, worker; the spare runtime was not used for it.
    assert len(_vllm_tree(router)) >= 3
    spares = [p for p in router.runtime_processes() if "--spare" in p.cmdline()]
    assert len(spares) == 1


def test_chat_and_completions_on_both_engines(router: RouterProcess) -> None:
    client = _client(router)
    for model in ("vllm-chat", "tf-chat"):
        chat = client.chat.completions.create(model=model, messages=HELLO, max_tokens=6)
        assert chat.model == model and chat.choices[0].message.role == "assistant"
        assert chat.usage.completion_tokens <= 6
        text = client.completions.create(model=model, prompt="The quick brown", max_tokens=4)
        assert text.model == model and text.choices[0].text
        streamed = list(client.completions.create(model=model, prompt="The quick", max_tokens=4, stream=True))
        assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_aliases_pipeline_names_and_the_default(router: RouterProcess) -> None:
    client = _client(router)
    # The first model is the default; "default" and no model at all reach vLLM.
    assert client.chat.completions.create(model="default", messages=HELLO, max_tokens=2).model == "vllm-chat"
    reply = router.post("/v1/chat/completions", {"messages": HELLO, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["model"] == "vllm-chat"
    config = json.loads((router.workdir / "config.json").read_text())
    by_path = router.post("/v1/chat/completions", {"model": config["vllm-chat"]["Plain"]["model_id"], "messages": HELLO, "max_tokens": 2})
    assert by_path.status_code == 200 and by_path.json()["model"] == "vllm-chat"
    assert router.post("/v1/models/default", {"model_id": "tf-chat"}).status_code == 200
    assert client.chat.completions.create(model="default", messages=HELLO, max_tokens=2).model == "tf-chat"
    assert router.post("/v1/models/default", {"model_id": "vllm-chat"}).status_code == 200


def test_vllms_own_request_features_pass_through(router: RouterProcess) -> None:
    client = _client(router)
    two = client.chat.completions.create(model="vllm-chat", messages=HELLO, max_tokens=3, n=2, temperature=1.0)
    assert len(two.choices) == 2
    scored = client.chat.completions.create(model="vllm-chat", messages=HELLO, max_tokens=3, logprobs=True, top_logprobs=2)
    assert scored.choices[0].logprobs is not None and len(scored.choices[0].logprobs.content[0].top_logprobs) == 2
    tool = {"type": "function", "function": {"name": "now", "description": "the time", "parameters": {"type": "object", "properties": {}}}}
    # tool_choice "auto" needs vLLM's tool parser: the entry's tool_call_parser turned it on.
    tools = client.chat.completions.create(model="vllm-chat", messages=HELLO, max_tokens=3, tools=[tool], tool_choice="auto")
    assert tools.choices[0].finish_reason in ("length", "stop", "tool_calls")
    structured = client.chat.completions.create(
        model="vllm-chat", messages=HELLO, max_tokens=8, response_format={"type": "json_object"}
    )
    assert structured.choices[0].message.content is not None


def test_responses_and_messages_apis_on_vllm(router: RouterProcess) -> None:
    """The router's translations reach vLLM's chat completions and /tokenize as they reach our runtime's."""
    client = _client(router)
    response = client.responses.create(model="vllm-chat", input="Hello!", instructions="Be brief.", max_output_tokens=4)
    assert response.model == "vllm-chat" and response.output[0].type == "message"
    assert 1 <= response.usage.output_tokens <= 4 and response.usage.input_tokens > 0
    assert response.status == "completed" or response.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="vllm-chat", input="Hello!", max_output_tokens=4, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert events[-1].response.output_text == "".join(deltas)
    assert client.responses.retrieve(response.id).output_text == response.output_text

    claude = anthropic.Anthropic(base_url=router.url, api_key="unused", max_retries=0, timeout=600)
    tools = [{"name": "now", "description": "the time", "input_schema": {"type": "object", "properties": {}}}]
    message = claude.messages.create(model="vllm-chat", max_tokens=4, system="Be brief.", messages=HELLO, tools=tools)
    assert message.model == "vllm-chat" and message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert 1 <= message.usage.output_tokens <= 4
    # count_tokens renders the prompt (tools included) on vLLM's /tokenize: the answer's input tokens.
    counted = claude.messages.count_tokens(model="vllm-chat", system="Be brief.", messages=HELLO, tools=tools)
    assert counted.input_tokens == message.usage.input_tokens
    with claude.messages.stream(model="vllm-chat", max_tokens=4, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text and final.usage.input_tokens > 0 and final.usage.output_tokens <= 4
    assert router.metric("modelplex_requests_total", model="vllm-chat", engine="vllm", endpoint="/v1/messages", code="200") == 2


def test_metrics_carry_the_engine(router: RouterProcess) -> None:
    assert router.metric("modelplex_model_loads_total", model="vllm-chat", engine="vllm", result="success") == 1
    assert router.metric("modelplex_requests_total", model="tf-chat", engine="transformers", code="200") >= 1
    assert router.metric("modelplex_model_memory_bytes", model="vllm-chat", engine="vllm") > 100 * 2**20


def test_unload_drains_then_ends_the_whole_tree(router: RouterProcess) -> None:
    tree = _vllm_tree(router)
    shared = _shared_memory(tree)
    finished: dict[str, object] = {}
    streaming = threading.Event()

    def long_request() -> None:
        # Long enough (hundreds of tokens) that the unload below lands while vLLM is still generating.
        body = {"model": "vllm-chat", "messages": HELLO, "max_tokens": 400, "stream": True, "ignore_eos": True}
        body["stream_options"] = {"include_usage": True}
        lines = []
        with router.client(timeout=300) as c, c.stream("POST", "/v1/chat/completions", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    lines.append(line)
                    streaming.set()
        finished["lines"] = lines
        finished["done_at"] = time.monotonic()

    worker = threading.Thread(target=long_request)
    worker.start()
    # The first chunk has arrived: the request is in flight (polling the gauge races a fast stream).
    assert streaming.wait(timeout=120)
    unload_sent = time.monotonic()
    assert router.post("/v1/models/unload", {"model_id": "vllm-chat"}).json() == {"model_id": "vllm-chat", "status": "unloaded"}
    worker.join(timeout=300)
    # The unload was asked for mid-stream, and the request in flight still finished whole: the unload
    # waited for it before stopping vLLM.
    assert unload_sent < finished["done_at"]
    assert finished["lines"][-1] == "data: [DONE]"
    assert json.loads(finished["lines"][-2].removeprefix("data: "))["usage"]["completion_tokens"] == 400
    # Every process of vLLM's tree is gone, and so is its shared memory.
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert _vllm_tree(router) == []
    assert not [path for path in shared if os.path.exists(path)]
    assert router.metric("modelplex_model_memory_bytes", model="vllm-chat") == 0
    assert router.post("/v1/models/status", {"model_id": "vllm-chat"}).json()["status"] == "unloaded"


def test_sixteen_cold_requests_cause_one_load(router: RouterProcess) -> None:
    loads = router.metric("modelplex_model_loads_total", model="vllm-chat", result="success")
    replies: list[httpx.Response] = []

    def ask() -> None:
        with router.client(timeout=600) as c:
            replies.append(c.post("/v1/chat/completions", json={"model": "vllm-chat", "messages": HELLO, "max_tokens": 2}))

    workers = [threading.Thread(target=ask) for _ in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert [r.status_code for r in replies] == [200] * 16
    assert router.metric("modelplex_model_loads_total", model="vllm-chat", result="success") == loads + 1


def test_a_crashed_engine_is_noticed_with_its_reason(router: RouterProcess) -> None:
    tree = _vllm_tree(router)
    shared = _shared_memory(tree)
    [core] = [p for p in tree if p.cmdline() and p.cmdline()[0].startswith("VLLM::EngineCore")]
    core.send_signal(signal.SIGKILL)
    router.wait_for(lambda: router.statuses()["vllm-chat"] == "failed", timeout=120, what="crash noticed")
    card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "vllm-chat")
    assert card["error"].startswith("vLLM exited"), card
    assert card["error"].endswith(": its engine core process ended unexpectedly (killed, or out of memory?)"), card
    # The rest of the tree (workers can outlive the API server) is stopped, its shared memory freed.
    _gone, alive = psutil.wait_procs(tree, timeout=60)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not [path for path in shared if os.path.exists(path)]
    assert router.metric("modelplex_model_unloads_total", model="vllm-chat", engine="vllm", reason="crash") == 1


def test_a_failed_vllm_load_reports_vllms_reason(router: RouterProcess) -> None:
    reply = router.post("/v1/chat/completions", {"model": "vllm-broken", "messages": HELLO, "max_tokens": 2})
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "vLLM exited with code 1" in error["message"]
    assert "is not a valid JSON file" in error["message"], error["message"]
    card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "vllm-broken")
    assert card["status"] == "failed" and "is not a valid JSON file" in card["error"]


def test_embeddings_agree_between_the_engines(router: RouterProcess) -> None:
    client = _client(router)
    texts = ["one endpoint, many models", "scale to zero"]
    vectors = {}
    for model in ("vllm-embed", "tf-embed"):
        reply = client.embeddings.create(model=model, input=texts)
        vectors[model] = [d.embedding for d in reply.data]
    for a, b in zip(vectors["vllm-embed"], vectors["tf-embed"], strict=True):
        cosine = sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        assert cosine > 0.99
