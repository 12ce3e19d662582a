"""Local replicas with real runtimes and tiny models: a model with maxReplicas > 1 runs that many
runtime processes; requests spread over them, prefix-affine ones stick to one, the autoscaler adds a
replica under sustained load and takes it away after the delay, and a replica killed mid-load costs no
request that had not started streaming. Responses and Messages requests share the chat completions'
prefix affinity.

Requests per replica are counted by each runtime process itself (its own /metrics), not by the router.
One router serves every test (three models, each unloaded again by the test that loads it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.harness import RouterProcess, start_router

pytestmark = pytest.mark.integration

CHAT_PATH = "/v1/chat/completions"


def _config(model_dir: Path) -> dict[str, object]:
    plain = {"Plain": {"model_id": str(model_dir)}}
    return {
        # Two replicas from the start (floor 2): routing by the fewest requests outstanding.
        "pair": {"alias": "pair", **plain, "scaling": {"minReplicas": 2, "maxReplicas": 2}},
        "sticky": {
            "alias": "sticky",
            **plain,
            "scaling": {"minReplicas": 2, "maxReplicas": 2, "routing": "prefix-affinity", "prefixLength": 64},
        },
        # One replica at first, a second one above one request per replica (1 s average), back after 3 s.
        "auto": {
            "alias": "auto",
            **plain,
            "scaling": {"maxReplicas": 2, "targetRequests": 1, "window": 1, "scaleDownDelay": 3},
        },
    }


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[RouterProcess]:
    proc = start_router(
        tmp_path_factory.mktemp("replicas") / "router",
        _config(tiny_llama_dir),
        fake=False,
        env={"MODELPLEX_ROUTER_SCALE_INTERVAL_SECONDS": "0.25"},
    )
    yield proc
    proc.stop()


def _started(router: RouterProcess, model: str) -> dict[int, int]:
    """pid -> port of every runtime the router started for ``model`` (from its JSON log)."""
    found = {}
    for line in router.log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message", "").startswith(f"started runtime for {model} "):
                found[record["pid"]] = record["port"]
    return found


def _live_ports(router: RouterProcess, model: str) -> dict[int, int]:
    """pid -> port of the model's runtimes running now."""
    running = {p.pid for p in router.runtime_processes()}
    return {pid: port for pid, port in _started(router, model).items() if pid in running}


def _chats_served(port: int) -> float:
    """Chat completions one runtime process has answered, by its own count."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelplex_runtime_requests_total" and sample.labels.get("endpoint") == CHAT_PATH
    )


def _replicas(router: RouterProcess, model: str) -> dict[str, int]:
    [card] = [m for m in router.get("/v1/models").json()["data"] if m["id"] == model]
    return card["replicas"]


def _chat(model: str, text: str, max_tokens: int = 4, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


async def _concurrently(router: RouterProcess, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=router.url, timeout=120) as client:
        return await asyncio.gather(*(client.post(CHAT_PATH, json=body) for body in bodies))


def _unload(router: RouterProcess, model: str) -> None:
    assert router.post("/v1/models/unload", {"model_id": model}).json()["status"] == "unloaded"
    router.wait_for(lambda: not _live_ports(router, model), what=f"{model}'s runtimes to exit")


def _load_both(router: RouterProcess, model: str) -> dict[int, int]:
    assert router.post(CHAT_PATH, _chat(model, "hello")).status_code == 200
    router.wait_for(lambda: _replicas(router, model) == {"desired": 2, "ready": 2}, 120, f"{model}: 2 ready")
    ports = _live_ports(router, model)
    assert len(ports) == 2
    return ports


def test_requests_spread_over_the_replicas(router: RouterProcess) -> None:
    ports = _load_both(router, "pair")
    before = {pid: _chats_served(port) for pid, port in ports.items()}
    replies = asyncio.run(_concurrently(router, [_chat("pair", f"question {i}", 16) for i in range(8)]))
    assert [r.status_code for r in replies] == [200] * 8
    served = {pid: _chats_served(port) - before[pid] for pid, port in ports.items()}
    assert sum(served.values()) == 8
    assert all(count > 0 for count in served.values()), served
    # Without GPUs each replica runs on its own share of the cores (cpus.py), its threads included.
    cores = sorted(os.sched_getaffinity(0))
    shares = [sorted(psutil.Process(pid).cpu_affinity()) for pid in ports]
    if len(cores) >= 2:
        assert sorted(c for share in shares for c in share) == cores, shares
    else:
        assert shares == [cores, cores]
    # The router's per-replica series exist while the replicas do.
    assert router.metric("modelplex_model_replicas_ready", model="pair") == 2
    _unload(router, "pair")
    assert _replicas(router, "pair") == {"desired": 0, "ready": 0}


def test_prefix_affine_requests_stick_to_one_replica(router: RouterProcess) -> None:
    ports = _load_both(router, "sticky")
    before = {pid: _chats_served(port) for pid, port in ports.items()}
    system = "You are a support agent for a very particular product; answer briefly. " * 2
    for i in range(6):  # one after the other: far under the load bound, so the prefix always goes home
        body = {"model": "sticky", "max_tokens": 2, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}]}  # fmt: skip
        assert router.post(CHAT_PATH, body).status_code == 200
    # The translated APIs hash the chat completion they become: the same system prompt, as Responses
    # instructions or a Messages system, goes to the same replica.
    for i in range(3):
        responses = {"model": "sticky", "max_output_tokens": 2, "instructions": system, "input": f"q {i}"}
        assert router.post("/v1/responses", responses).status_code == 200
        messages = {"model": "sticky", "max_tokens": 2, "system": system,
                    "messages": [{"role": "user", "content": f"q {i}"}]}  # fmt: skip
        assert router.post("/v1/messages", messages).status_code == 200
    served = sorted(_chats_served(port) - before[pid] for pid, port in ports.items())
    assert served == [0, 12]
    _unload(router, "sticky")


def test_the_autoscaler_adds_a_replica_under_load_and_removes_it_after_the_delay(router: RouterProcess) -> None:
    assert router.post(CHAT_PATH, _chat("auto", "hello")).status_code == 200
    assert _replicas(router, "auto") == {"desired": 1, "ready": 1}

    async def sustained() -> list[httpx.Response]:
        # Four long generations at a time against a target of one per replica, until two replicas serve.
        # (The bound is for a machine so busy that the second runtime takes minutes to load.)
        deadline = time.monotonic() + 240
        async with httpx.AsyncClient(base_url=router.url, timeout=300) as client:
            results: list[httpx.Response] = []
            while True:
                batch = [_chat("auto", f"load {i}", 48, ignore_eos=True) for i in range(4)]
                results += await asyncio.gather(*(client.post(CHAT_PATH, json=b) for b in batch))
                if _replicas(router, "auto")["ready"] == 2 or time.monotonic() > deadline:
                    return results

    results = asyncio.run(sustained())
    assert all(r.status_code == 200 for r in results)
    assert _replicas(router, "auto") == {"desired": 2, "ready": 2}, router.log_tail()
    assert router.metric("modelplex_scaling_decisions_total", model="auto", direction="up") == 1
    assert len(_live_ports(router, "auto")) == 2
    # Quiet now: after the 3 s delay the autoscaler goes back to one replica, and its process exits.
    router.wait_for(lambda: _replicas(router, "auto") == {"desired": 1, "ready": 1}, 60, "scale down to 1")
    router.wait_for(lambda: len(_live_ports(router, "auto")) == 1, 30, "the second runtime to exit")
    assert router.metric("modelplex_scaling_decisions_total", model="auto", direction="down") == 1
    assert router.post(CHAT_PATH, _chat("auto", "still here")).status_code == 200
    _unload(router, "auto")


def test_killing_a_replica_mid_load_loses_no_request(router: RouterProcess) -> None:
    ports = _load_both(router, "pair")
    victim = psutil.Process(next(iter(ports)))

    async def load_and_kill() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=router.url, timeout=300) as client:
            requests = [
                asyncio.ensure_future(client.post(CHAT_PATH, json=_chat("pair", f"q {i}", 64, ignore_eos=True)))
                for i in range(8)
            ]
            await asyncio.sleep(0.5)  # every request is on a replica, none has answered yet
            victim.kill()
            return await asyncio.gather(*requests)

    replies = asyncio.run(load_and_kill())
    # Non-streamed: nothing had reached the client, so each request on the killed replica went to the other.
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies if r.status_code != 200]
    assert router.statuses()["pair"] == "loaded"
    # The backend replaces the dead replica (after its restart back-off).
    router.wait_for(lambda: _replicas(router, "pair") == {"desired": 2, "ready": 2}, 120, "the replacement")
    assert len(_live_ports(router, "pair")) == 2 and victim.pid not in _live_ports(router, "pair")
    _unload(router, "pair")
