"""Comparison 2 — scale from zero: time to first token for a request to an unloaded model, split up.

- cold through the router: a streaming request to the unloaded model, timed to its first content chunk;
- the split, measured on a runtime started by hand the same way: process start (until ``/health``
  answers: interpreter, FastAPI, uvicorn), imports (torch + transformers + the engine, timed in a fresh
  interpreter), weight load (the runtime's ``load_seconds`` minus those imports: its loader imports
  torch on the load thread), and the first token (first request after ``/ready``);
- warm: the same request once the model is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import plots
from benchmarks.processes import Proc, free_port
from benchmarks.report import Section, median, spread
from benchmarks.routing_overhead import MODEL, start_modelplex, write_config

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4,
        "temperature": 0, "stream": True}


@dataclass
class Sizes:
    repeats: int


def first_token(url: str, timeout: float = 300) -> float:
    """Seconds until the first streamed chunk that carries content (SSE comments are not tokens)."""
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=BODY, timeout=timeout) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    return time.perf_counter() - started
    raise RuntimeError("the stream ended without a token")


def import_seconds() -> float:
    code = ("import time; t = time.perf_counter(); import modelplex_runtime.engine.loader; "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def standalone_split(model_dir: Path) -> dict[str, float]:
    port = free_port()
    entry = {"Plain": {"model_id": str(model_dir)}, "alias": MODEL}
    proc = Proc([sys.executable, "-m", "modelplex_runtime", "--host", "127.0.0.1", "--port", str(port),
                 "--model-json", json.dumps(entry), "--served-model-name", MODEL, "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        listening = proc.wait_http(url + "/health", 120)
        ready = proc.wait_http(url + "/ready", 300)
        load = float(httpx.get(url + "/ready", timeout=5).json()["load_seconds"])
        first = first_token(url)
        warm = min(first_token(url) for _ in range(3))
    finally:
        proc.stop()
    return {"process_start": listening, "ready": ready, "load_seconds": load, "first_token": first, "warm": warm}


def router_cold(model_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        router = start_modelplex(write_config(Path(tmp), str(model_dir), False), [])
        try:
            cold = first_token(router.url)
            warm = min(first_token(router.url) for _ in range(3))
        finally:
            router.stop()
    return {"cold": cold, "warm": warm}


def section(model_dir: Path, sizes: Sizes, img_dir: Path) -> Section:
    runs = []
    for _ in range(sizes.repeats):
        imports = import_seconds()
        split = standalone_split(model_dir)
        routed = router_cold(model_dir)
        weights = max(0.0, split["load_seconds"] - imports)
        runs.append({"imports": imports, **split, "weights": weights, "router_cold": routed["cold"],
                     "router_warm": routed["warm"], "beyond_weights": routed["cold"] - weights})
    sec = Section("Scale from zero")
    sec.intro = [
        "A streaming chat request (`max_tokens` 4) to an unloaded model (the tiny random Llama, a few MB of "
        f"weights) through `modelplex from-config`, timed to the first content chunk; {sizes.repeats} repeat(s). "
        "The split comes from a runtime started the same way by hand: *process start* = spawn until `/health` "
        "answers (interpreter, FastAPI, uvicorn); *imports* = `import modelplex_runtime.engine.loader` (torch, "
        "transformers) in a fresh interpreter; *weight load* = the runtime's `load_seconds` minus the imports "
        "(the runtime imports torch on its load thread); *first token* = the first request after `/ready`. The "
        "weight-load slice is an upper bound: besides reading the weights it holds whatever `load_seconds` "
        "covers after the loader's import (transformers' lazily imported model code, the tokenizer, engine "
        "set-up), so *beyond the weight load* below is a lower bound.",
    ]
    def col(key: str) -> list[float]:
        return [r[key] for r in runs]
    sec.table("", ["what", "seconds"], [
        ["cold request through the router: time to first token", spread(col("router_cold"), digits=2)],
        ["the same request warm (through the router)", spread(col("router_warm"), digits=3)],
        ["split: process start (spawn → `/health`)", spread(col("process_start"), digits=2)],
        ["split: imports (torch, transformers, engine)", spread(col("imports"), digits=2)],
        ["split: weight load (`load_seconds` − imports)", spread(col("weights"), digits=2)],
        ["split: first token after `/ready` (runtime direct)", spread(col("first_token"), digits=3)],
        ["runtime direct: spawn → `/ready`", spread(col("ready"), digits=2)],
        ["**beyond the weight load** (cold TTFT − weight load)", spread(col("beyond_weights"), digits=2)],
    ])
    beyond = median(col("beyond_weights"))
    sec.goals = [f"Goal: the time beyond loading the weights is under 1 s -> {beyond:.2f} s: "
                 f"{'met' if beyond < 1 else 'NOT met'}."]
    if beyond >= 1:
        sec.notes = ["The gap is process start plus the torch/transformers imports, paid on every cold start; a "
                     "spare runtime process started ahead with torch imported (handed its model on demand) would "
                     "remove both. Not implemented yet."]
    name = "scale_from_zero.png"
    m = {k: median(col(k)) for k in ("process_start", "imports", "weights", "first_token", "router_warm")}
    rest = max(0.0, median(col("router_cold")) - m["process_start"] - m["imports"] - m["weights"] - m["first_token"])
    plots.stacked(["cold (router)", "warm (router)"],
                  {"process start": [m["process_start"], 0], "imports": [m["imports"], 0],
                   "weight load": [m["weights"], 0], "first token": [m["first_token"], m["router_warm"]],
                   "router polling / other": [rest, 0]},
                  "seconds", "Time to first token: unloaded vs loaded model", img_dir / name)
    sec.plots.append(name)
    sec.data = {"runs": runs}
    return sec
