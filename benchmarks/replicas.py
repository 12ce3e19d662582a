"""Comparison 8 — replicas: one replica vs two behind the router, by routing policy, on a shared-prefix workload.

A model with ``scaling.minReplicas = maxReplicas = 2`` runs two runtime processes (docs/scaling.md); the
router picks one per request by the model's ``scaling.routing``. The workload is chat requests whose
messages start with one of a few long system prompts (as many requests of one application do), each
with its own question; streamed, so time to first token is measured. Per configuration: requests per
second, time to first token, latency, how the requests spread over the replicas (each runtime's own
count from its ``/metrics``) and, for vLLM (automatic prefix caching), its prefix-cache hit rate.

    python -m benchmarks --quick --only replicas
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import loadgen, vllm_engine
from benchmarks.processes import Proc
from benchmarks.report import Section, median, spread
from benchmarks.routing_overhead import MODEL, start_modelplex

CONFIGS: dict[str, dict[str, Any]] = {
    "1 replica": {"minReplicas": 1, "maxReplicas": 1},
    "2, round-robin": {"minReplicas": 2, "maxReplicas": 2, "routing": "round-robin"},
    "2, least-outstanding": {"minReplicas": 2, "maxReplicas": 2, "routing": "least-outstanding"},
    # The hashed prefix must lie inside the shared system prompt (PROMPT_CHARS), or each question moves it.
    "2, prefix-affinity": {"minReplicas": 2, "maxReplicas": 2, "routing": "prefix-affinity", "prefixLength": 256},
    # A looser bound on the load (default 1.25 x the mean): more requests go to their prefix's home replica.
    "2, prefix-affinity, loadBound 2": {"minReplicas": 2, "maxReplicas": 2, "routing": "prefix-affinity",
                                        "prefixLength": 256, "loadBound": 2.0},
}
# The runtimes count their answered chat completions under these names (ours, vLLM's).
SERVED = {"transformers": ("modelplex_runtime_requests_total", {"endpoint": "/v1/chat/completions"}),
          "vllm": ("vllm:request_success_total", {})}


# The prefix cache must be short of room for the workload to tell the policies apart. A request is about 385
# prompt tokens and 16 generated ones in 4 of vLLM's 128-token blocks: the first 2 hold only its system prompt
# (shared with the other requests of its application, and kept by the prefix cache for reuse), the other 2 its
# own tokens. A replica of 18 blocks runs its ~4 requests (8 blocks of their own) and keeps the system prompts of
# about 4 of the 8 applications (8 blocks): the ones prefix affinity sends it, where round robin sends it all 8,
# so its cache evicts what it would reuse (measured on one vLLM server with 20 blocks, one request at a time:
# 4 applications in turn hit 55-66% of the prompt tokens, the most the 2 shared blocks allow; 8 in turn 5%).
VLLM_KV_BLOCKS = 18


@dataclass
class Sizes:
    requests: int
    concurrency: int
    prompts: int
    """Distinct system prompts the requests share."""
    max_tokens: int
    engines: tuple[str, ...]
    repeats: int
    vllm_kv_blocks: int = VLLM_KV_BLOCKS
    """KV cache blocks of each vLLM replica (``--num-gpu-blocks-override``; 128 tokens a block)."""


# About 330 tokens of the tiny models' tokenizer: within the vLLM model's 512 with the question and the answer.
PROMPT_CHARS = 400


def system_prompts(n: int, length: int = PROMPT_CHARS) -> list[str]:
    """``n`` distinct long system prompts (deterministic)."""
    rng = random.Random(14)
    words = "support billing account order refund shipping invoice product policy customer".split()
    return [f"Assistant {i}: " + " ".join(rng.choice(words) for _ in range(length // 7))[:length] for i in range(n)]


def bodies(sizes: Sizes) -> list[dict[str, Any]]:
    prompts = system_prompts(sizes.prompts)
    rng = random.Random(7)
    return [{"model": MODEL, "max_tokens": sizes.max_tokens, "temperature": 0, "ignore_eos": True, "messages": [
        {"role": "system", "content": rng.choice(prompts)}, {"role": "user", "content": f"question {i}?"}]}
        for i in range(sizes.requests)]  # fmt: skip


def _entry(engine: str, model_dir: Path, scaling: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    if engine == "vllm":
        args = [*vllm_engine.ENGINE_ARGS, "--num-gpu-blocks-override", str(sizes.vllm_kv_blocks)]
        return vllm_engine.entry(model_dir, MODEL, args, pinned=True, scaling=scaling)
    return {"Plain": {"model_id": str(model_dir)}, "alias": MODEL, "pinned": True, "scaling": scaling}


def _replicas_ready(router: Proc) -> int:
    for card in httpx.get(router.url + "/v1/models", timeout=10).json()["data"]:
        if card["id"] == MODEL:
            return int(card.get("replicas", {}).get("ready", 0))
    return 0


def runtime_ports(router: Proc) -> list[int]:
    """Ports of the runtimes the router started (its children with ``--port``)."""
    ports = []
    for child in router.tree():
        try:
            argv = child.cmdline()
        except Exception:
            continue
        if child.pid != router.ps.pid and "--port" in argv:
            ports.append(int(argv[argv.index("--port") + 1]))
    return sorted(set(ports))


def _counter(port: int, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip


def _counts(engine: str, ports: list[int]) -> dict[str, list[float]]:
    name, labels = SERVED[engine]
    out = {"served": [_counter(p, name, labels) for p in ports]}
    if engine == "vllm":
        out["hits"] = [_counter(p, "vllm:prefix_cache_hits_total", {}) for p in ports]
        out["queries"] = [_counter(p, "vllm:prefix_cache_queries_total", {}) for p in ports]
    return out


async def _drive(url: str, work: list[dict[str, Any]], concurrency: int) -> loadgen.LoadResult:
    """Every body of ``work`` once, ``concurrency`` at a time, streamed."""
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    result = loadgen.LoadResult()
    queue = list(work)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker() -> None:
            while queue:
                await loadgen._one(client, "/v1/chat/completions", queue.pop(0), True, result)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall = time.perf_counter() - started
    return result


def measure(engine: str, label: str, model_dir: Path, sizes: Sizes) -> dict[str, Any]:
    """One router with the model in configuration ``label``: the workload after a warm-up."""
    scaling = CONFIGS[label]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "router.json"
        config.write_text(json.dumps({MODEL: _entry(engine, model_dir, scaling, sizes)}))
        extra, env = ([], None) if engine != "vllm" else (["--vllm-python", vllm_engine.vllm_python()],
                                                          vllm_engine.CPU_ENV)
        router = start_modelplex(config, extra, env=env)
        try:
            deadline = time.monotonic() + (900 if engine == "vllm" else 300)
            while _replicas_ready(router) < scaling["minReplicas"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: the replicas did not become ready")
                time.sleep(0.2)
            ports = runtime_ports(router)
            work = bodies(sizes)
            asyncio.run(_drive(router.url, work[: max(2, sizes.concurrency)], sizes.concurrency))  # warm-up
            before = _counts(engine, ports)
            res = asyncio.run(_drive(router.url, work, sizes.concurrency))
            after = _counts(engine, ports)
        finally:
            router.stop()
    delta = {k: [a - b for a, b in zip(after[k], before[k], strict=True)] for k in after}
    summary = res.summary()
    served = delta["served"]
    summary["busiest_share"] = max(served) / sum(served) if sum(served) else float("nan")
    if engine == "vllm" and sum(delta["queries"]):
        summary["prefix_hit_rate"] = sum(delta["hits"]) / sum(delta["queries"])
    return summary


def run(model_dirs: dict[str, Path], sizes: Sizes) -> dict[str, Any]:
    """Every configuration of every engine, interleaved over the repeats; an engine that fails is recorded."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    failed: dict[str, str] = {}
    for _ in range(sizes.repeats):
        for engine in sizes.engines:
            if engine in failed:
                continue
            try:
                for label in CONFIGS:
                    runs.setdefault(engine, {}).setdefault(label, []).append(
                        measure(engine, label, model_dirs[engine], sizes))
            except Exception as exc:
                traceback.print_exc()
                failed[engine] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    return {"runs": runs, "failed": failed}


def section(results: dict[str, Any], sizes: Sizes) -> Section:
    sec = Section("Replicas and routing policies")
    sec.intro = [
        f"{sizes.requests} streamed chat requests at concurrency {sizes.concurrency}, each starting with one of "
        f"{sizes.prompts} system prompts of {PROMPT_CHARS} characters and asking its own question (`max_tokens` "
        f"{sizes.max_tokens}, `ignore_eos`), after a warm-up; {sizes.repeats} interleaved repeat(s). One router per "
        "configuration; a model with two replicas runs two runtime processes on this machine "
        "(`scaling.minReplicas = maxReplicas = 2`); prefix affinity hashes the first 256 characters (inside the "
        "shared prompt). *Busiest share*: the fraction of the requests the busier "
        "replica served, by the runtimes' own counts (0.5 = even). vLLM replicas run with automatic prefix "
        "caching (its default) and a KV cache of "
        f"{sizes.vllm_kv_blocks} blocks of 128 tokens each (`--num-gpu-blocks-override`), room for the running "
        f"requests and the system prompts of about half the {sizes.prompts} applications, so that where a request "
        "lands decides whether its prompt is still cached; the hit rate is vLLM's own (prefix-cache hits over "
        "queries, in tokens). Without GPUs each replica runs on its own share of the cores (one each here: "
        "`split_cpus`, docs/scaling.md).",
    ]
    for engine, reason in results["failed"].items():
        sec.notes.append(f"- **{engine}: not measured in this run** — `{reason}`")
    for engine, by_label in results["runs"].items():
        rows = []
        for label, summaries in by_label.items():
            def col(key: str, scale: float = 1.0, digits: int = 1, s: list[dict[str, float]] = summaries) -> str:
                return spread([x.get(key, float("nan")) for x in s], scale, digits)

            rows.append([label, col("rps", digits=2), col("ttfb_p50", 1000, 0), col("ttfb_p99", 1000, 0),
                         col("p50", 1000, 0), col("busiest_share", digits=2), col("prefix_hit_rate", digits=2),
                         col("errors", digits=0)])
        sec.table(f"**{engine}**", ["configuration", "req/s", "TTFT p50 ms", "TTFT p99 ms", "latency p50 ms",
                                    "busiest share", "prefix hit rate", "errors"], rows)
    runs = results["runs"]
    if "transformers" in runs:
        one = median([s["rps"] for s in runs["transformers"]["1 replica"]])
        two = median([s["rps"] for s in runs["transformers"]["2, least-outstanding"]])
        sec.goals.append(f"Goal (transformers runtime): two replicas serve more than one: {two:.2f} vs {one:.2f} "
                         f"req/s — {'met' if two > one else 'not met'} (on 2 CPU cores the replicas share the cores)")
    if "vllm" in runs:
        hit = median([s.get("prefix_hit_rate", float("nan")) for s in runs["vllm"]["2, prefix-affinity"]])
        rr = median([s.get("prefix_hit_rate", float("nan")) for s in runs["vllm"]["2, round-robin"]])
        sec.goals.append(f"Goal (vLLM): prefix affinity keeps more of the prefix cache's hits than round robin: "
                         f"{hit:.2f} vs {rr:.2f} — {'met' if hit > rr else 'not met'}")
    sec.data = results
    return sec
