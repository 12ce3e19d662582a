"""Per-pod routing on the emulated cluster: the router watches each model's EndpointSlices (written by
the fake kubelet, which plays the EndpointSlice controller) and picks a pod per request.

* With real runtimes (tiny model): a model scales 0 -> 1 on the first request and 1 -> 2 by load (the
  built-in autoscaler), and then requests reach both pods, counted by each runtime process itself.
* With the fake runtime (it holds a stream for as long as the test needs): a pod
  dropped from the slice gets no new request while its streaming request finishes, and a pod whose
  process is gone while the slice still lists it is skipped on the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_kubelet import FakeKubelet
from kopf_harness import DEPLOYMENTS, MM, PODS, eventually, running_operator
from kube_harness import (
    CHAT_PATH,
    NS,
    chats_served,
    multimodel,
    pod_backend,
    replica_card,
    replicas,
    serving_router,
)

from helpers.ports import free_port

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def deployed_model(cluster: Any, entry: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
    """One model ``tiny`` in MultiModel ``demo``; the operator runs; its runtime port is chosen."""
    cluster.objects[MM, NS, "demo"] = multimodel("demo", {"tiny": {"alias": "tiny", **entry}})
    async with running_operator(str(cluster.url)):
        await eventually(lambda: (DEPLOYMENTS, NS, "demo-tiny") in cluster.objects)
        yield {"demo-tiny": free_port()}


def _chat(text: str, max_tokens: int = 4, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


async def test_a_model_scales_to_two_pods_by_load_and_both_take_requests(
    cluster: Any, tiny_llama_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelplex_router.kube")
    # Above one request per pod (1 s average) a second pod; no scale-down during the test.
    scaling = {"maxReplicas": 2, "targetRequests": 1, "window": 1, "scaleDownDelay": 600}
    async with (
        deployed_model(cluster, {"Plain": {"model_id": str(tiny_llama_dir)}, "scaling": scaling}) as ports,
        FakeKubelet(cluster, DEPLOYMENTS, NS, ports, PODS, runtime="real") as kubelet,
        serving_router(pod_backend(cluster, pod_name="router-a"), scale_interval_seconds=0.25) as url,
        httpx.AsyncClient(base_url=url, timeout=300) as client,
    ):
        assert replicas(cluster, "demo-tiny") == 0
        assert (await client.post(CHAT_PATH, json=_chat("hello"))).status_code == 200
        assert replicas(cluster, "demo-tiny") == 1
        assert await replica_card(client, "tiny") == {"desired": 1, "ready": 1}
        [first] = kubelet.pods_of("demo-tiny")

        # Four long generations at a time against a target of one per pod, until two pods serve.
        # (The bound is for a machine so busy that the second runtime takes minutes to load.)
        deadline = time.monotonic() + 240
        while (await replica_card(client, "tiny"))["ready"] < 2 and time.monotonic() < deadline:
            batch = [_chat(f"load {i}", 48, ignore_eos=True) for i in range(4)]
            replies = await asyncio.gather(*(client.post(CHAT_PATH, json=body) for body in batch))
            assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        assert await replica_card(client, "tiny") == {"desired": 2, "ready": 2}
        assert replicas(cluster, "demo-tiny") == 2
        pods = kubelet.pods_of("demo-tiny")
        assert pods[0].name == first.name and len({p.address for p in pods}) == 2

        # Each request goes to one pod, by the fewest outstanding: both pods answer some.
        before = {p.name: await chats_served(p.url) for p in pods}
        replies = await asyncio.gather(*(client.post(CHAT_PATH, json=_chat(f"q {i}", 16)) for i in range(8)))
        assert [r.status_code for r in replies] == [200] * 8
        served = {p.name: await chats_served(p.url) - before[p.name] for p in pods}
        assert sum(served.values()) == 8 and all(count > 0 for count in served.values()), served

        metrics = (await client.get("/metrics")).text
        assert 'modelplex_model_replicas_ready{engine="transformers",model="tiny"} 2.0' in metrics
        assert 'modelplex_scaling_decisions_total{direction="up",engine="transformers",model="tiny"} 1.0' in metrics
        joined = [r for r in caplog.records if getattr(r, "change", None) == "joined"]
        assert [(r.model, r.replica) for r in joined] == [("tiny", p.name) for p in pods]  # type: ignore[attr-defined]


async def test_a_pod_leaving_the_slice_drains_and_a_dead_pod_is_skipped_on_retry(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelplex_router.kube")
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"tiny": {"tokens": 10, "hold_streams": True}}))
    monkeypatch.setenv("FAKE_RUNTIME_CONTROL", str(control))
    entry = {"Plain": {"model_id": "org/tiny"}, "scaling": {"minReplicas": 2, "maxReplicas": 2}}
    async with (
        deployed_model(cluster, entry) as ports,
        FakeKubelet(cluster, DEPLOYMENTS, NS, ports, PODS) as kubelet,
        serving_router(pod_backend(cluster), autoscaler=False) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        assert (await client.post(CHAT_PATH, json=_chat("load"))).status_code == 200
        # A load waits for one ready pod of the two it asks for; the other follows.
        await _until_card(client, {"desired": 2, "ready": 2})
        pods = {p.name: p for p in kubelet.pods_of("demo-tiny")}
        async with client.stream("POST", CHAT_PATH, json={**_chat("long"), "stream": True}) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            first_line = await anext(lines)  # the runtime holds the rest until the test releases it
            assert first_line.startswith("data: ")
            busy = await _busy_pod(client, set(pods))
            [other] = set(pods) - {busy}
            before = {name: await chats_served(pod.url) for name, pod in pods.items()}

            kubelet.take_out(busy)  # its process keeps running: only the slice no longer lists it
            await _until_card(client, {"desired": 2, "ready": 1})
            replies = await asyncio.gather(*(client.post(CHAT_PATH, json=_chat(f"q {i}")) for i in range(4)))
            assert [r.status_code for r in replies] == [200] * 4
            served = {name: await chats_served(pod.url) - before[name] for name, pod in pods.items()}
            assert served == {busy: 0, other: 4}, served
            await _busy_pod(client, {busy})  # still in flight there, drained, not cut
            assert (await client.post(f"{pods[busy].url}/release")).status_code == 200
            body = first_line + "\n" + "\n".join([line async for line in lines])
        # The request that was running on the pod that left finished there, whole.
        chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "".join(
            f"t{i} " for i in range(10))  # fmt: skip
        assert body.rstrip().endswith("data: [DONE]")
        left = [r for r in caplog.records if getattr(r, "change", None) == "left"]
        assert [r.replica for r in left] == [busy]  # type: ignore[attr-defined]

        # The pod comes back; then its process dies while the slice still lists it ready: requests that
        # find its port closed go to the other pod on the retry, and none fails.
        kubelet.live[busy].in_slice = True
        await _until_card(client, {"desired": 2, "ready": 2})
        kubelet.live[busy].process.kill()
        await kubelet.live[busy].process.wait()
        replies = await asyncio.gather(*(client.post(CHAT_PATH, json=_chat(f"r {i}")) for i in range(4)))
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]


async def _until_card(client: httpx.AsyncClient, want: dict[str, int]) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while (card := await replica_card(client, "tiny")) != want:
        assert asyncio.get_running_loop().time() < deadline, card
        await asyncio.sleep(0.1)


async def _busy_pod(client: httpx.AsyncClient, names: set[str]) -> str:
    """The pod the router has a request outstanding on (its per-replica gauge)."""
    text = (await client.get("/metrics")).text
    busy = [n for n in names if f'modelplex_replica_requests_in_flight{{engine="transformers",model="tiny",replica="{n}"}} 1.0' in text]
    assert len(busy) == 1, text
    return busy[0]
