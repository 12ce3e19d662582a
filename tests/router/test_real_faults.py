"""Faults against real runtimes and tiny models (no fake): a runtime frozen with SIGSTOP mid-request, one
whose own /health reports its engine stalled, a model whose config.json is corrupt, unload racing reload
under 200 held streams, one body limit, field values only the runtime refuses.

Each router here is started once per module and shared by the tests that need its settings.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}
LONG = {**CHAT, "max_tokens": 1500, "ignore_eos": True}


def _runtime(router: RouterProcess) -> psutil.Process:
    [runtime] = router.runtime_processes()
    return runtime


def _events(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]


def _starts(router: RouterProcess, model: str) -> list[int]:
    """PIDs of the runtimes the router started for ``model`` (from its JSON log)."""
    pids = []
    for line in router.log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message", "").startswith(f"started runtime for {model} "):
                pids.append(record["pid"])
    return pids


@pytest.fixture(scope="module")
def stall_router(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[RouterProcess]:
    """Health checks off, a 2 s stall bound: only the stall bound can end a frozen runtime's requests."""
    router = start_router(
        tmp_path_factory.mktemp("stall") / "router",
        {"tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}}},
        fake=False,
        args=["--stall-timeout-seconds", "2"],
        env={"MODELPLEX_ROUTER_HEALTH_CHECK_INTERVAL_SECONDS": "0"},
    )
    yield router
    for proc in router.runtime_processes():
        proc.send_signal(signal.SIGCONT)
    router.stop()


def test_a_frozen_runtime_ends_requests_at_the_stall_bound(stall_router: RouterProcess) -> None:
    router = stall_router
    with router.client() as client:
        assert client.post("/v1/chat/completions", json={"model": "tiny", **CHAT, "max_tokens": 2}).status_code == 200
        runtime = _runtime(router)
        try:
            # Frozen mid-stream: the stream ends with an error event instead of hanging.
            with client.stream("POST", "/v1/chat/completions", json={"model": "tiny", **LONG, "stream": True}) as s:
                lines = s.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                runtime.send_signal(signal.SIGSTOP)
                rest = "\n".join(lines)
            events = _events(first + "\n" + rest)
            error = json.loads(events[-1])["error"]
            assert error["code"] == "runtime_timeout" and "sent nothing for 2s" in error["message"]
            assert "[DONE]" not in events
            # Frozen before the request: 504 in OpenAI's error shape.
            reply = client.post("/v1/chat/completions", json={"model": "tiny", **CHAT, "max_tokens": 2})
            assert reply.status_code == 504, reply.text
            assert reply.json()["error"]["code"] == "runtime_timeout"
            assert router.metric("modelplex_upstream_stalls_total", model="tiny") == 2
            # Nothing declared it hung (health checks are off here): it is still the same runtime.
            assert router.statuses()["tiny"] == "loaded"
        finally:
            runtime.send_signal(signal.SIGCONT)
        # Thawed, it serves again.
        assert client.post("/v1/chat/completions", json={"model": "tiny", **CHAT, "max_tokens": 2}).status_code == 200
        assert _runtime(router).pid == runtime.pid


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    broken = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "config.json").write_text('{"model_type": "llama", ')
    return broken


@pytest.fixture(scope="module")
def hung_router(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, broken_model: Path
) -> Iterator[RouterProcess]:
    """Fast health checks (every 0.3 s, 0.5 s timeout, 3 in a row), a stall bound far away."""
    router = start_router(
        tmp_path_factory.mktemp("hung") / "router",
        {
            "tiny": {"alias": "tiny", "Plain": {"model_id": str(tiny_llama_dir)}},
            "broken": {"alias": "broken", "Plain": {"model_id": str(broken_model)}},
            # Its engine thread counts as stalled whenever it is busy (a threshold no step can meet).
            "stuck": {"alias": "stuck", "Plain": {"model_id": str(tiny_llama_dir)},
                      "engine_args": ["--engine-stall-seconds", "1e-9"]},
        },
        fake=False,
        args=["--stall-timeout-seconds", "120"],
        env={
            "MODELPLEX_ROUTER_HEALTH_CHECK_INTERVAL_SECONDS": "0.3",
            "MODELPLEX_ROUTER_HEALTH_CHECK_TIMEOUT_SECONDS": "0.5",
            "MODELPLEX_ROUTER_HEALTH_CHECK_FAILURES": "3",
            "MODELPLEX_ROUTER_LOAD_BACKOFF_INITIAL_SECONDS": "30",
        },
    )
    yield router
    for proc in router.runtime_processes():
        proc.send_signal(signal.SIGCONT)
    router.stop()


async def test_a_hung_runtime_is_declared_hung_ended_and_reloaded(hung_router: RouterProcess) -> None:
    router = hung_router
    async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
        first = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT, "max_tokens": 2})
        assert first.status_code == 200
        runtime = _runtime(router)

        async def frozen_stream() -> list[str]:
            async with client.stream("POST", "/v1/chat/completions",
                                     json={"model": "tiny", **LONG, "stream": True}) as s:
                lines = s.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        break
                runtime.send_signal(signal.SIGSTOP)
                return _events("\n".join([line async for line in lines]))

        stream = asyncio.create_task(frozen_stream())
        await asyncio.to_thread(router.wait_for, lambda: runtime.status() == psutil.STATUS_STOPPED, what="SIGSTOP")
        waiting = await client.post("/v1/chat/completions", json={"model": "tiny", **CHAT, "max_tokens": 2})
        events = await stream

    # The requests waiting on it get 503 + Retry-After (an error event on the stream) ...
    assert waiting.status_code == 503, waiting.text
    assert waiting.headers["retry-after"] and waiting.json()["error"]["code"] == "runtime_unresponsive"
    assert json.loads(events[-1])["error"]["code"] == "runtime_unresponsive"
    # ... its process is ended, and status and metrics say what happened.
    await asyncio.to_thread(router.wait_for, lambda: not runtime.is_running() or runtime.status() == "zombie",
                            what="the hung runtime to be ended")
    card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "tiny")
    assert card["status"] == "failed" and card["error"].startswith("hung: no answer to GET /health within 0.5s")
    assert router.metric("modelplex_model_unloads_total", model="tiny", reason="hung") == 1
    assert router.metric("modelplex_health_check_failures_total", model="tiny") >= 3
    # The next request loads it again (no back-off: the load itself did not fail).
    again = router.post("/v1/chat/completions", {"model": "tiny", **CHAT, "max_tokens": 2})
    assert again.status_code == 200, again.text
    assert _runtime(router).pid != runtime.pid and router.statuses()["tiny"] == "loaded"


async def test_a_runtime_that_reports_its_engine_stalled_is_declared_hung_with_its_reason(
    hung_router: RouterProcess,
) -> None:
    """The runtime's own /health says its engine thread makes no progress (503 with the reason): the
    router's checks carry that reason into the hung error, and the request waiting on it ends at once."""
    router = hung_router
    async with httpx.AsyncClient(base_url=router.url, timeout=120) as client:
        assert (await client.post("/v1/chat/completions", json={"model": "stuck", **CHAT, "max_tokens": 2})
                ).status_code == 200
        reply = await client.post("/v1/chat/completions", json={"model": "stuck", **LONG})
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "runtime_unresponsive", reply.text
    card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "stuck")
    assert card["status"] == "failed", card
    assert card["error"].startswith("hung: GET /health answered 503: model 'stuck' is unhealthy: the engine "
                                    "thread"), card
    assert "has made no progress" in card["error"], card
    assert router.metric("modelplex_model_unloads_total", model="stuck", reason="hung") == 1


async def test_a_model_that_cannot_load_backs_off_with_its_real_cause(hung_router: RouterProcess) -> None:
    router = hung_router
    async with httpx.AsyncClient(base_url=router.url, timeout=120) as client:
        body = {"model": "broken", **CHAT, "max_tokens": 2}
        # 20 at once share the one failing load; 30 more, one after another, are answered from the
        # back-off without a load of their own (one process in all).
        replies = list(await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(20))))
        for _ in range(30):
            replies.append(await client.post("/v1/chat/completions", json=body))
    assert len(_starts(router, "broken")) == 1
    assert router.metric("modelplex_model_loads_total", model="broken", result="failure") == 1
    cause = "is not a valid JSON file"
    for reply in replies:
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_load_failed"
        assert cause in reply.json()["error"]["message"] and "config.json" in reply.json()["error"]["message"]
        assert "Finished server process" not in reply.json()["error"]["message"]
        assert 1 <= int(reply.headers["retry-after"]) <= 30
    card = next(m for m in router.get("/v1/models").json()["data"] if m["id"] == "broken")
    assert card["status"] == "failed" and cause in card["error"] and card["retry_after_seconds"] >= 1
    assert router.metric("modelplex_model_load_backoff_seconds", model="broken") == 30
    # An explicit reload does not wait for the back-off (and fails the same way).
    reload = router.post("/v1/models/reload", {"model_id": "broken"}).json()
    assert reload["status"] == "internal_error" and cause in reload["error"]
    assert len(_starts(router, "broken")) == 2


@pytest.fixture(scope="module")
def race_router(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[RouterProcess]:
    router = start_router(
        tmp_path_factory.mktemp("race") / "router",
        {"racer": {"alias": "racer", "Plain": {"model_id": str(tiny_llama_dir)}}},
        fake=False,
        env={"MODELPLEX_ROUTER_MAX_BODY_BYTES": str(40 * 1024 * 1024)},
    )
    yield router
    router.stop()


async def test_unload_racing_reload_under_200_held_streams(race_router: RouterProcess) -> None:
    router = race_router
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=router.url, timeout=300, limits=limits) as client:

        async def stream() -> tuple[int, list[str]]:
            body = {"model": "racer", **CHAT, "max_tokens": 3, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as s:
                return s.status_code, _events((await s.aread()).decode())

        async def manage(action: str) -> httpx.Response:
            return await client.post(f"/v1/models/{action}", json={"model_id": "racer"})

        streams = [asyncio.create_task(stream()) for _ in range(200)]
        await asyncio.to_thread(router.wait_for, lambda: router.metric("modelplex_requests_waiting", model="racer")
                                == 200, timeout=60, what="200 held streams")
        # Fired together while the streams are held, twice.
        answers = list(await asyncio.gather(manage("unload"), manage("reload"), manage("unload")))
        answers += await asyncio.gather(manage("reload"), manage("unload"))
        results = await asyncio.gather(*streams)
        answers.append(await manage("reload"))

    for answer in answers:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
        assert set(answer.json()) <= {"model_id", "status", "error"}, answer.json()
        assert answer.json()["status"] in ("loaded", "unloaded"), answer.json()
    assert answers[-1].json()["status"] == "loaded"
    failed = [(code, events) for code, events in results if code != 200 or events[-1:] != ["[DONE]"]]
    assert not failed, failed[:3]
    assert not [e for _, events in results for e in events if '"error"' in e]
    assert router.metric("modelplex_model_loads_total", model="racer", result="cancelled") >= 1
    assert router.metric("modelplex_requests_total", model="racer", code="200") >= 200
    assert "Traceback" not in router.log_path.read_text()


def test_one_body_limit_from_router_to_runtime(race_router: RouterProcess) -> None:
    """The router's limit (40 MiB here) reaches the runtimes it starts: a 34 MiB body the router accepts
    is not refused by the runtime's own default (32 MiB)."""
    router = race_router
    padding = "x" * (34 * 1024 * 1024)
    body = json.dumps({"model": "racer", **CHAT, "max_tokens": 1, "metadata_padding": padding}).encode()
    with router.client(timeout=120) as client:
        reply = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert reply.status_code != 413, reply.text[:300]
        assert reply.status_code in (200, 400), reply.text[:300]
        over = client.post(
            "/v1/chat/completions", content=body + b" " * (7 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"


def test_field_values_only_the_runtime_refuses_are_a_clean_400_through_the_router(race_router: RouterProcess) -> None:
    """Values the router passes on (it checks only the body's shape, model and stream): the runtime's 400
    arrives as it is, before any stream starts, and the runtime goes on serving (it did not crash)."""
    router = race_router
    with router.client(timeout=120) as client:
        assert client.post("/v1/chat/completions", json={"model": "racer", **CHAT, "max_tokens": 1}).status_code == 200
        [runtime] = router.runtime_processes()
        for extra, param in (({"seed": 2**63, "stream": True}, "seed"), ({"seed": -(2**63) - 1}, "seed"),
                             ({"stop": [""], "stream": True}, "stop"), ({"max_tokens": True}, "max_tokens")):
            reply = client.post("/v1/chat/completions", json={"model": "racer", **CHAT, **extra})
            assert reply.status_code == 400, (extra, reply.text)
            assert reply.headers["content-type"].startswith("application/json")
            assert reply.json()["error"]["param"] == param, reply.json()
        assert router.runtime_processes() == [runtime] and router.statuses()["racer"] == "loaded"
    assert router.metric("modelplex_model_unloads_total", model="racer", reason="crash") == 0
