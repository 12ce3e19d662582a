"""Auto-reload against fake runtimes: single-flight loads, bounded waits, failed loads, idle unload, pinning."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import pytest

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}
MODELS = {
    "a": {"alias": "alpha", "Plain": {"model_id": "org/alpha"}},
    "b": {"alias": "beta", "Plain": {"model_id": "org/beta"}},
}


async def _chat(client: httpx.AsyncClient, model: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={**CHAT, "model": model})


async def test_concurrent_requests_to_an_unloaded_model_cause_one_load(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"load_delay": 3}})
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        first = [asyncio.create_task(_chat(client, "alpha")) for _ in range(10)]
        await asyncio.to_thread(
            router.wait_for,
            lambda: router.metric("modelplex_requests_waiting", model="alpha") == 10,
            what="10 waiting",
        )
        assert router.statuses()["alpha"] == "reloading"
        # More requests arrive while the model is loading: they wait for the same load.
        later = [asyncio.create_task(_chat(client, "alpha")) for _ in range(10)]
        replies = await asyncio.gather(*first, *later)
    assert [r.status_code for r in replies] == [200] * 20
    assert all(r.json()["model"] == "alpha" for r in replies)
    assert len(router.starts("alpha")) == 1
    assert router.metric("modelplex_model_loads_total", model="alpha", result="success") == 1
    assert router.metric("modelplex_requests_total", model="alpha", code="200") == 20
    assert router.metric("modelplex_requests_waiting", model="alpha") == 0
    assert router.starts("beta") == []


async def test_wait_is_bounded_with_retry_after(router_factory) -> None:
    router = router_factory(
        MODELS,
        control={"*": {"load_delay": 3}},
        args=["--max-wait-seconds", "0.5"],
        env={"MODELPLEX_ROUTER_RETRY_AFTER_SECONDS": "7"},
    )
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        reply = await _chat(client, "alpha")
        assert reply.status_code == 503
        assert reply.headers["retry-after"] == "7"
        assert reply.json()["error"]["code"] == "model_loading"
        # The load goes on without the request; a later request is served by it.
        await asyncio.to_thread(router.wait_for, lambda: router.statuses()["alpha"] == "loaded", what="load")
        assert (await _chat(client, "alpha")).status_code == 200
    assert len(router.starts("alpha")) == 1


async def test_waiting_room_is_bounded(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"load_delay": 3}}, args=["--max-waiting-per-model", "3"])
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        waiting = [asyncio.create_task(_chat(client, "alpha")) for _ in range(3)]
        await asyncio.to_thread(
            router.wait_for,
            lambda: router.metric("modelplex_requests_waiting", model="alpha") == 3,
            what="3 waiting",
        )
        refused = await asyncio.gather(*(_chat(client, "alpha") for _ in range(4)))
        stream = await client.post("/v1/chat/completions", json={**CHAT, "model": "alpha", "stream": True})
        served = await asyncio.gather(*waiting)
    assert [r.status_code for r in refused] == [429] * 4
    assert refused[0].json()["error"]["code"] == "too_many_waiting"
    assert "retry-after" in refused[0].headers
    assert stream.status_code == 429
    assert [r.status_code for r in served] == [200] * 3


async def test_failed_load_fails_every_waiter_then_backs_off(router_factory) -> None:
    router = router_factory(
        MODELS,
        control={"alpha": {"load_delay": 0.5, "fail_load": "CUDA out of memory (simulated)"}},
        env={"MODELPLEX_ROUTER_LOAD_BACKOFF_INITIAL_SECONDS": "1"},
    )
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        replies = await asyncio.gather(*(_chat(client, "alpha") for _ in range(5)))
        assert [r.status_code for r in replies] == [503] * 5
        for reply in replies:
            assert reply.json()["error"]["code"] == "model_load_failed"
            assert "CUDA out of memory (simulated)" in reply.json()["error"]["message"]
            assert reply.headers["retry-after"] == "1"
        assert len(router.starts("alpha")) == 1
        card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "alpha")
        assert card["status"] == "failed" and "CUDA out of memory (simulated)" in card["error"]
        status = router.post("/v1/models/status", {"model_id": "alpha"}).json()
        assert status["status"] == "failed" and "exited with code 1" in status["error"]
        assert router.metric("modelplex_model_loads_total", model="alpha", result="failure") == 1
        # The other model is unaffected.
        assert (await _chat(client, "beta")).status_code == 200

        # reload does not wait for the back-off; failing again doubles it (2 s).
        reload = router.post("/v1/models/reload", {"model_id": "alpha"}).json()
        assert reload["status"] == "internal_error" and "CUDA out of memory" in reload["error"]
        assert len(router.starts("alpha")) == 2
        assert router.metric("modelplex_model_load_backoff_seconds", model="alpha") == 2

        # Fixed, but still backing off: requests (streams too) fail at once with the cause, and load nothing.
        router.set_control({})
        during = await _chat(client, "alpha")
        assert during.status_code == 503 and during.headers["retry-after"] in ("1", "2")
        assert "CUDA out of memory (simulated)" in during.json()["error"]["message"]
        assert "next automatic try in" in during.json()["error"]["message"]
        stream = await client.post("/v1/chat/completions", json={**CHAT, "model": "alpha", "stream": True})
        assert stream.status_code == 503 and stream.json()["error"]["code"] == "model_load_failed"
        assert len(router.starts("alpha")) == 2
        card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "alpha")
        assert card["retry_after_seconds"] in (1, 2)

        # Once the back-off has passed, the next request loads the model again.
        router.wait_for(lambda: "retry_after_seconds" not in router.post(
            "/v1/models/status", {"model_id": "alpha"}).json(), what="the back-off to pass")
        assert (await _chat(client, "alpha")).status_code == 200
    assert router.statuses()["alpha"] == "loaded"
    assert len(router.starts("alpha")) == 3
    assert router.metric("modelplex_model_load_backoff_seconds", model="alpha") == 0


async def test_idle_unload_and_pinned(router_factory) -> None:
    config = {
        "idle": {"alias": "idle", "Plain": {"model_id": "org/idle"}, "ttl": 1},
        "pinned": {"alias": "pinned", "Plain": {"model_id": "org/pinned"}, "pinned": True, "idle_timeout": 1},
        "preloaded": {"alias": "pre", "Plain": {"model_id": "org/pre"}, "preload": True, "idle_timeout": 1},
    }
    router = router_factory(config)
    # Pinned and preload models load at start, without a request.
    router.wait_for(lambda: router.statuses()["pinned"] == "loaded", what="pinned preload")
    assert router.statuses()["idle"] == "unloaded"
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        assert (await _chat(client, "idle")).status_code == 200
    pid = router.starts("idle")[0]
    router.wait_for(lambda: router.statuses()["idle"] == "unloaded", what="idle unload")
    router.wait_for(lambda: router.statuses()["pre"] == "unloaded", what="idle unload of a preloaded model")
    router.wait_for(lambda: pid not in [p.pid for p in router.runtime_processes()], what="runtime exit")
    assert router.metric("modelplex_model_unloads_total", model="idle", reason="idle") == 1
    # The pinned model has been idle just as long and stays.
    assert router.statuses()["pinned"] == "loaded"
    assert len(router.starts("pinned")) == 1


async def test_killed_idle_runtime_is_noticed_and_reloaded(router_factory) -> None:
    router = router_factory(MODELS)
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        assert (await _chat(client, "alpha")).status_code == 200
        [runtime] = router.runtime_processes()
        runtime.kill()
        router.wait_for(lambda: router.statuses()["alpha"] == "failed", what="crash noticed")
        status = router.post("/v1/models/status", {"model_id": "alpha"}).json()
        assert "killed by signal 9" in status["error"]
        assert (await _chat(client, "alpha")).status_code == 200
    assert len(router.starts("alpha")) == 2
    assert router.metric("modelplex_model_unloads_total", model="alpha", reason="crash") == 1


def test_models_listing_shows_reloading(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"load_delay": 2}})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(router.post, "/v1/chat/completions", {**CHAT, "model": "beta"})
        router.wait_for(lambda: router.statuses()["beta"] == "reloading", what="reloading")
        assert router.post("/v1/models/status", {"model_id": "beta"}).json()["status"] == "reloading"
        assert pending.result().json()["model"] == "beta"
    assert router.statuses()["beta"] == "loaded"


async def test_a_request_to_a_runtime_that_just_died_reloads_it(router_factory) -> None:
    # The monitor is slow here, so the request itself finds the dead runtime.
    router = router_factory(MODELS, env={"MODELPLEX_ROUTER_MONITOR_INTERVAL": "60"})
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        assert (await _chat(client, "alpha")).status_code == 200
        [runtime] = router.runtime_processes()
        runtime.kill()
        runtime.wait(10)
        reply = await _chat(client, "alpha")
    assert reply.status_code == 200, reply.text
    assert len(router.starts("alpha")) == 2
    assert router.metric("modelplex_model_unloads_total", model="alpha", reason="crash") == 1


async def test_a_full_runtime_says_when_to_come_back(router_factory) -> None:
    router = router_factory(MODELS, control={"alpha": {"busy_retry_after": 3}})
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        reply = await _chat(client, "alpha")
    assert reply.status_code == 429 and reply.headers["retry-after"] == "3"
    assert reply.json()["error"]["code"] == "busy"
