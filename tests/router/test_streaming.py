"""Streaming through the router against fake runtimes: loading comments, drains, crashes, disconnects."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "Hello!"}], "stream": True}
MODELS = {
    "a": {"alias": "alpha", "Plain": {"model_id": "org/alpha"}},
    "b": {"alias": "beta", "Plain": {"model_id": "org/beta"}},
}


def _data_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_a_held_stream_gets_loading_comments_then_tokens(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"load_delay": 1.5}})
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "alpha"}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert comments[0] == ": loading alpha ..."
    assert len(comments) >= 2
    events = _data_events(lines)
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]] == [
        f"t{i} " for i in range(5)
    ]

    # OpenAI's SSE parser ignores the comments.
    router.post("/v1/models/unload", {"model_id": "alpha"})
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="alpha", messages=CHAT["messages"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "t0 t1 t2 t3 t4 "


def test_a_held_stream_whose_load_fails_ends_with_an_error_event(router_factory) -> None:
    router = router_factory(MODELS, control={"alpha": {"fail_load": "weights are corrupt (simulated)"}})
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "alpha"}) as r,
    ):
        lines = [line for line in r.iter_lines() if line]
    [event] = _data_events(lines)
    error = json.loads(event)["error"]
    assert error["code"] == "model_load_failed" and "weights are corrupt (simulated)" in error["message"]
    assert router.metric("modelplex_requests_total", model="alpha", code="503") == 1


def test_runtime_killed_mid_stream_ends_the_stream_with_an_error(router_factory) -> None:
    router = router_factory(MODELS, control={"alpha": {"die_after_tokens": 2, "token_delay": 0.05}})
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "alpha"}) as r,
    ):
        assert r.status_code == 200
        events = _data_events([line for line in r.iter_lines() if line])
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["t0 ", "t1 "]
    assert "error" in json.loads(events[-1]) and "[DONE]" not in events
    router.wait_for(lambda: router.statuses()["alpha"] == "failed", what="crash noticed")
    # The next request brings it back.
    router.set_control({})
    with router.client() as client:
        assert (
            client.post("/v1/chat/completions", json={**CHAT, "model": "alpha", "stream": False}).status_code
            == 200
        )
    assert len(router.starts("alpha")) == 2

    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    router.set_control({"alpha": {"die_after_tokens": 1}})
    router.post("/v1/models/unload", {"model_id": "alpha"})
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="alpha", messages=CHAT["messages"], stream=True):
            pass


def test_unload_during_a_stream_drains_it_first(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"token_delay": 0.2, "tokens": 8}})
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "alpha"}) as r,
    ):
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            unload = pool.submit(router.post, "/v1/models/unload", {"model_id": "alpha"})
            rest = [line for line in lines if line.startswith("data: ")]
            assert unload.result().json() == {"model_id": "alpha", "status": "unloaded"}
    events = _data_events([first, *rest])
    assert events[-1] == "[DONE]" and len(events) == 9
    assert router.runtime_processes() == []


def test_drain_is_bounded_by_the_grace_period(router_factory) -> None:
    router = router_factory(
        MODELS,
        control={"*": {"token_delay": 0.5, "tokens": 200}},
        args=["--drain-grace-seconds", "0.5"],
        env={"MODELPLEX_ROUTER_STOP_GRACE_SECONDS": "1"},
    )
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "alpha"}) as r,
    ):
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        assert router.post("/v1/models/unload", {"model_id": "alpha"}).json()["status"] == "unloaded"
        rest = _data_events([line for line in lines if line.startswith("data: ")])
    assert "error" in json.loads(rest[-1])
    assert router.runtime_processes() == []


def test_client_disconnect_reaches_the_runtime(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"token_delay": 0.2, "tokens": 100}})
    with (
        router.client() as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "beta"}) as r,
    ):
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
    router.wait_for(lambda: "disconnect beta" in router.events(), what="the runtime to see the disconnect")
    router.wait_for(
        lambda: router.metric("modelplex_requests_in_flight", model="beta") == 0, what="request released"
    )


def test_a_client_leaving_a_non_streamed_request_reaches_the_runtime(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"token_delay": 0.2, "tokens": 100}})
    with router.client() as client:
        # Loaded first: the client must leave while the runtime generates, not while the model loads.
        assert client.post("/v1/models/reload", json={"model_id": "beta"}).json()["status"] == "loaded"
    with router.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={**CHAT, "stream": False, "model": "beta"})
    router.wait_for(lambda: "disconnect beta" in router.events(), what="the runtime to see the disconnect")
    router.wait_for(
        lambda: router.metric("modelplex_requests_in_flight", model="beta") == 0, what="request released"
    )
    router.wait_for(
        lambda: router.metric("modelplex_requests_total", model="beta", code="499") == 1, what="a 499 counted"
    )


def test_a_client_leaving_while_its_model_loads_frees_its_place(router_factory) -> None:
    router = router_factory(MODELS, control={"*": {"load_delay": 2}})
    with router.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={**CHAT, "stream": False, "model": "alpha"})
    router.wait_for(
        lambda: router.metric("modelplex_requests_total", model="alpha", code="499") == 1,
        what="a 499 counted",
    )
    assert router.metric("modelplex_requests_waiting", model="alpha") == 0
    # The load it started goes on, and the next request is served.
    with router.client(timeout=30) as client:
        answer = client.post("/v1/chat/completions", json={**CHAT, "stream": False, "model": "alpha"})
    assert answer.status_code == 200
