"""The router's API against fake runtimes: ids, default model, management endpoints, metrics, configs."""

from __future__ import annotations

import subprocess
import sys

import openai
import psutil
import pytest

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}
TWO_MODELS = {
    "llama3-3b": {"alias": "llama3-3b", "Plain": {"model_id": "meta-llama/Llama-3.2-3B-Instruct"}},
    "qwen3-4b": {"Plain": {"model_id": "Qwen/Qwen3-4B"}, "in_situ_quant": "Q4K"},
    "embed": {"alias": "minilm", "Embedding": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"}},
}
PROXIED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize"]


def test_model_selection_and_listing(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    listing = router.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["default", "llama3-3b", "Qwen/Qwen3-4B", "minilm"]
    assert "status" not in listing["data"][0]
    assert {m["status"] for m in listing["data"][1:]} == {"unloaded"}
    assert all(m["object"] == "model" and m["owned_by"] == "local" for m in listing["data"])

    # The runtime answers with the model it serves: the router always forwards the API id.
    for requested, served in [
        ("llama3-3b", "llama3-3b"),
        ("meta-llama/Llama-3.2-3B-Instruct", "llama3-3b"),
        ("default", "llama3-3b"),
        (None, "llama3-3b"),
        ("Qwen/Qwen3-4B", "Qwen/Qwen3-4B"),
    ]:
        body = dict(CHAT) if requested is None else {**CHAT, "model": requested}
        reply = router.post("/v1/chat/completions", body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == served

    emb = router.post("/v1/embeddings", {"model": "minilm", "input": ["a", "b"]})
    assert emb.status_code == 200 and len(emb.json()["data"]) == 2
    assert router.post("/tokenize", {"model": "llama3-3b", "prompt": "a b c"}).json()["tokens"] == [0, 1, 2]
    assert router.post("/detokenize", {"model": "llama3-3b", "tokens": [1, 2]}).json()["prompt"] == "t1 t2"
    assert router.post("/v1/completions", {"model": "llama3-3b", "prompt": "x"}).json()["choices"][0]["text"]
    assert len(router.starts("llama3-3b")) == 1


def test_unknown_model_is_the_same_404_on_every_endpoint(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    for path in PROXIED:
        reply = router.post(
            path, {"model": "gpt-5", "messages": [], "input": "x", "prompt": "x", "tokens": []}
        )
        assert reply.status_code == 404
        error = reply.json()["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
        assert "'gpt-5'" in error["message"]
        for model_id in ("default", "llama3-3b", "Qwen/Qwen3-4B", "minilm"):
            assert model_id in error["message"]
    bad = router.post("/v1/chat/completions", [1, 2])
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    with router.client() as c:
        not_json = c.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    assert router.events() == []


def test_management_endpoints(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    pipeline = "meta-llama/Llama-3.2-3B-Instruct"
    assert router.post("/v1/models/status", {"model_id": pipeline}).json() == {
        "model_id": pipeline,
        "status": "unloaded",
    }
    assert router.post("/v1/models/reload", {"model_id": pipeline}).json() == {
        "model_id": pipeline,
        "status": "loaded",
    }
    assert router.post("/v1/models/status", {"model_id": "llama3-3b"}).json()["status"] == "loaded"
    # Reloading a loaded model answers loaded and starts nothing.
    assert router.post("/v1/models/reload", {"model_id": "llama3-3b"}).json()["status"] == "loaded"
    assert len(router.starts("llama3-3b")) == 1
    pid = router.starts("llama3-3b")[0]

    for verb in ("unload", "reload", "status"):
        reply = router.post(f"/v1/models/{verb}", {"model_id": "nope"})
        assert reply.json() == {"model_id": "nope", "status": "not_found"}
    assert router.statuses()["llama3-3b"] == "loaded"
    assert router.post("/v1/models/unload", {}).status_code == 400

    assert router.post("/v1/models/unload", {"model_id": pipeline}).json() == {
        "model_id": pipeline,
        "status": "unloaded",
    }
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert router.statuses()["llama3-3b"] == "unloaded"
    # Unloading an unloaded model is fine; so is unloading every model, default and last included.
    for model_id in ("llama3-3b", "Qwen/Qwen3-4B", "minilm"):
        assert router.post("/v1/models/unload", {"model_id": model_id}).json()["status"] == "unloaded"
    assert router.runtime_processes() == []
    # The unloaded default stays the default and comes back on the next request.
    assert router.get("/v1/models/default").json() == {"model_id": "llama3-3b"}
    assert router.post("/v1/chat/completions", CHAT).json()["model"] == "llama3-3b"
    assert len(router.starts("llama3-3b")) == 2

    # The default can be changed at run time, by alias or pipeline name.
    assert router.post("/v1/models/default", {"model_id": "Qwen/Qwen3-4B"}).json() == {
        "model_id": "Qwen/Qwen3-4B"
    }
    assert router.get("/v1/models/default").json() == {"model_id": "Qwen/Qwen3-4B"}
    assert (
        router.post("/v1/chat/completions", {**CHAT, "model": "default"}).json()["model"] == "Qwen/Qwen3-4B"
    )
    missing = router.post("/v1/models/default", {"model_id": "nope"})
    assert missing.status_code == 404 and "llama3-3b" in missing.json()["error"]["message"]
    assert router.get("/v1/models/default").json() == {"model_id": "Qwen/Qwen3-4B"}


def test_health_and_metrics(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    assert router.post("/v1/chat/completions", {**CHAT, "model": "llama3-3b"}).status_code == 200
    router.post("/v1/chat/completions", {**CHAT, "model": "nope"})
    health = router.get("/health").json()
    assert health["status"] == "ok" and health["models"]["llama3-3b"] == "loaded"
    text = router.get("/metrics").text
    for name in (
        "modelplex_requests_total",
        "modelplex_request_duration_seconds",
        "modelplex_model_loads_total",
        "modelplex_model_load_duration_seconds",
        "modelplex_requests_waiting",
        "modelplex_model_status",
        "modelplex_model_memory_bytes",
    ):
        assert name in text
    assert router.metric("modelplex_requests_total", model="llama3-3b", code="200") == 1
    assert router.metric("modelplex_requests_total", model="unknown", code="404") == 1
    assert router.metric("modelplex_model_loads_total", model="llama3-3b", result="success") == 1
    assert router.metric("modelplex_model_load_duration_seconds_count", model="llama3-3b") == 1
    assert router.metric("modelplex_model_status", model="llama3-3b", status="loaded") == 1
    assert router.metric("modelplex_model_status", model="minilm", status="unloaded") == 1
    assert router.metric("modelplex_model_memory_bytes", model="llama3-3b") > 0


def test_openai_client_through_the_router(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="llama3-3b", messages=[{"role": "user", "content": "Hi"}])
    assert reply.model == "llama3-3b" and reply.choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="Qwen/Qwen3-4B", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    ]
    assert "".join(pieces) == "t0 t1 t2 t3 t4 "
    assert [m.id for m in client.models.list()] == ["default", "llama3-3b", "Qwen/Qwen3-4B", "minilm"]
    with pytest.raises(openai.NotFoundError, match="Available models"):
        client.embeddings.create(model="nope", input="x")


def test_toml_config_with_default_model(router_factory) -> None:
    toml = (
        'command = "serve"\ndefault_model_id = "org/second"\n[server]\nport = 1\n'
        '[[models]]\nkind = "text"\nmodel_id = "org/first"\n'
        '[[models]]\nkind = "text"\nmodel_id = "org/second"\n[models.quantization]\nin_situ_quant = "8"\n'
    )
    router = router_factory(toml, config_name="models.toml")
    assert router.get("/v1/models/default").json() == {"model_id": "org/second"}
    assert router.post("/v1/chat/completions", CHAT).json()["model"] == "org/second"


def test_config_errors_stop_the_command(tmp_path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(
        '{"one": {"Plain": {"model_id": "org/x"}}, "two": {"Plain": {"model_id": "org/x"}},'
        ' "three": {"alias": "default", "Plain": {"model_id": "org/y"}}}'
    )
    done = subprocess.run(
        [sys.executable, "-m", "modelplex", "from-config", "--file", str(config), "-p", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "'one'" in done.stderr and "'two'" in done.stderr
    assert "reserved" in done.stderr


def test_serve_single_model(router_factory) -> None:
    router = router_factory({}, command="serve", args=["-m", "org/solo", "--alias", "solo"])
    # serve loads its model at start.
    router.wait_for(lambda: router.statuses()["solo"] == "loaded", what="preload")
    assert router.post("/v1/chat/completions", CHAT).json()["model"] == "solo"
    assert router.post("/v1/chat/completions", {**CHAT, "model": "org/solo"}).json()["model"] == "solo"


def test_runtimes_die_with_a_killed_router(router_factory) -> None:
    router = router_factory(TWO_MODELS)
    assert router.post("/v1/chat/completions", CHAT).status_code == 200
    [runtime] = router.runtime_processes()
    router.proc.kill()  # no chance to clean up: the runtime's parent-death signal must end it
    router.proc.wait(10)
    runtime.wait(10)
    assert not runtime.is_running()
