"""Comparison 2 — scale from zero: time to first token for a request to an unloaded model, split up.

- cold through the router, two ways: with a spare runtime waiting (the default: a runtime started
  ahead with torch imported and a load rehearsed, handed the model on stdin) and with spares off
  (``--spare-runtimes 0``: a fresh process per load);
- what loading the weights costs on its own: the ``load_seconds`` a spare reports for the model (its
  imports are already paid, so this is config, tokenizer, weights and engine set-up);
- the split of a fresh process, measured on a runtime started by hand: process start (until ``/health``
  answers), imports (torch + transformers + the engine, in a fresh interpreter), its load, first token;
- the split of a spare: warm-up, its resident memory while it waits, hand-off until listening, load,
  first token;
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
import psutil

from benchmarks import plots
from benchmarks.processes import Proc, free_port
from benchmarks.report import Section, median, spread
from benchmarks.routing_overhead import MODEL, start_modelplex, write_config
from modelplex_runtime.spare import READY_LINE, encode_assignment

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4,
        "temperature": 0, "stream": True}
MIB = 2**20


@dataclass
class Sizes:
    repeats: int


def first_token(url: str, timeout: float = 300, model: str = MODEL) -> float:
    """Seconds until the first streamed chunk that carries content (SSE comments are not tokens)."""
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json={**BODY, "model": model}, timeout=timeout) as resp:
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


def _entry(model_dir: Path) -> dict[str, object]:
    return {"Plain": {"model_id": str(model_dir)}, "alias": MODEL}


def fresh_split(model_dir: Path) -> dict[str, float]:
    """A runtime started cold by hand: spawn → listening → ready, its load, its first token."""
    port = free_port()
    proc = Proc([sys.executable, "-m", "modelplex_runtime", "--host", "127.0.0.1", "--port", str(port),
                 "--model-json", json.dumps(_entry(model_dir)), "--served-model-name", MODEL,
                 "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        listening = proc.wait_http(url + "/health", 120)
        ready = proc.wait_http(url + "/ready", 300)
        load = float(httpx.get(url + "/ready", timeout=5).json()["load_seconds"])
        first = first_token(url)
    finally:
        proc.stop()
    return {"process_start": listening, "ready": ready, "load_seconds": load, "first_token": first}


def spare_split(model_dir: Path) -> dict[str, float]:
    """A spare started by hand: warm-up, RSS while waiting, hand-off → listening → ready, its load."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "modelplex_runtime", "--spare", "--log-level", "warning"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != READY_LINE.encode():
            raise RuntimeError(f"the spare runtime exited with {proc.wait()} before it was warm")
        warm_up = time.perf_counter() - started
        rss = psutil.Process(proc.pid).memory_info().rss / MIB
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        handed = time.perf_counter()
        proc.stdin.write(encode_assignment(_entry(model_dir), MODEL, port))
        proc.stdin.close()
        listening = _poll(url + "/health", proc) - handed
        ready = _poll(url + "/ready", proc) - handed
        load = float(httpx.get(url + "/ready", timeout=5).json()["load_seconds"])
        first = first_token(url)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"warm_up": warm_up, "rss_mib": rss, "handoff_listening": listening, "handoff_ready": ready,
            "load_seconds": load, "first_token": first}


def _poll(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the runtime exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter()
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s")


def _warm_spares(router: Proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(router.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith("modelplex_spare_runtimes ") and float(line.split()[1]) >= 1:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no warm spare runtime within {timeout:g}s: {router.tail()}")


def router_cold(model_dir: Path, spares: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        router = start_modelplex(write_config(Path(tmp), str(model_dir), False),
                                 ["--spare-runtimes", str(spares)])
        try:
            if spares:
                _warm_spares(router)
            cold = first_token(router.url)
            warm = min(first_token(router.url) for _ in range(3))
        finally:
            router.stop()
    return {"cold": cold, "warm": warm}


def section(model_dir: Path, sizes: Sizes, img_dir: Path) -> Section:
    runs = []
    for _ in range(sizes.repeats):
        imports = import_seconds()
        fresh = fresh_split(model_dir)
        spare = spare_split(model_dir)
        with_spare = router_cold(model_dir, spares=1)
        without = router_cold(model_dir, spares=0)
        weights = spare["load_seconds"]
        runs.append({
            "imports": imports, "fresh": fresh, "spare": spare, "weights": weights,
            "cold_spare": with_spare["cold"], "cold_fresh": without["cold"],
            "warm": min(with_spare["warm"], without["warm"]),
            "beyond_spare": with_spare["cold"] - weights, "beyond_fresh": without["cold"] - weights,
        })
    sec = Section("Scale from zero")
    sec.intro = [
        "A streaming chat request (`max_tokens` 4) to an unloaded model (the tiny random Llama, a few MB of "
        f"weights) through `modelplex from-config`, timed to the first content chunk; {sizes.repeats} repeat(s). "
        "Two router set-ups: the default, where a *spare runtime* waits (started ahead with torch and "
        "transformers imported and a load rehearsed on a throwaway model; the router hands it the model on "
        "stdin), and `--spare-runtimes 0`, a fresh process per load. *Loading the weights* is the `load_seconds` "
        "a spare runtime reports for the model: reading config, tokenizer and weights and setting up the engine, "
        "with every import already paid. *Beyond the weights* = cold time to first token − that.",
        "The splits come from runtimes started by hand the same way. Fresh process: *process start* = spawn "
        "until `/health` answers (interpreter, FastAPI, uvicorn); *imports* = `import "
        "modelplex_runtime.engine.loader` (torch, transformers) in a fresh interpreter; its `load_seconds` "
        "(imports on the load thread, the lazily imported model and tokenizer code, then the weights). Spare: "
        "its warm-up (paid once, before any request), its resident memory while waiting, then hand-off until "
        "listening and until `/ready`.",
    ]

    def col(*keys: str) -> list[float]:
        out = []
        for r in runs:
            value = r
            for key in keys:
                value = value[key]
            out.append(float(value))
        return out

    sec.table("", ["what", "seconds"], [
        ["**cold, spare runtime waiting (default)**: time to first token", spread(col("cold_spare"), digits=2)],
        ["cold, `--spare-runtimes 0`: time to first token", spread(col("cold_fresh"), digits=2)],
        ["warm (model loaded): time to first token", spread(col("warm"), digits=3)],
        ["loading the weights (`load_seconds` in a spare)", spread(col("weights"), digits=3)],
        ["**beyond the weights, spare runtime**", spread(col("beyond_spare"), digits=2)],
        ["beyond the weights, `--spare-runtimes 0`", spread(col("beyond_fresh"), digits=2)],
    ])
    sec.table("Where a fresh process spends its time", ["step", "seconds"], [
        ["process start (spawn → `/health`)", spread(col("fresh", "process_start"), digits=2)],
        ["imports (torch, transformers, engine), fresh interpreter", spread(col("imports"), digits=2)],
        ["`load_seconds` (imports, lazy model/tokenizer code, weights)", spread(col("fresh", "load_seconds"), digits=2)],
        ["spawn → `/ready`", spread(col("fresh", "ready"), digits=2)],
        ["first token after `/ready`", spread(col("fresh", "first_token"), digits=3)],
    ])
    sec.table("Where a spare runtime spends its time", ["step", "value"], [
        ["warm-up, before any request (s)", spread(col("spare", "warm_up"), digits=2)],
        ["resident memory while waiting (MiB)", spread(col("spare", "rss_mib"), digits=0)],
        ["hand-off → listening (s)", spread(col("spare", "handoff_listening"), digits=3)],
        ["hand-off → `/ready` (s)", spread(col("spare", "handoff_ready"), digits=3)],
        ["`load_seconds` (s)", spread(col("spare", "load_seconds"), digits=3)],
        ["first token after `/ready` (s)", spread(col("spare", "first_token"), digits=3)],
    ])
    beyond = median(col("beyond_spare"))
    sec.goals = [
        f"Goal: the time beyond loading the weights is under 1 s -> {beyond:.2f} s with the default spare "
        f"runtime: {'met' if beyond < 1 else 'NOT met'} ({median(col('beyond_fresh')):.2f} s with spares off)."
    ]
    sec.notes = [
        "The spare's cost is its memory while it waits (the table above) and its warm-up CPU, paid when the "
        "router starts and again after each hand-off, once the handed-over model has loaded (so the refill "
        "does not slow that load). `--spare-runtimes 0` turns it off. On Kubernetes each model is its own "
        "Deployment, and a cold start there is dominated by scheduling and the image; spares are a local-backend "
        "feature.",
    ]
    name = "scale_from_zero.png"
    f = {k: median(col("fresh", k)) for k in ("process_start", "first_token")}
    s = {k: median(col("spare", k)) for k in ("handoff_listening", "load_seconds", "first_token")}
    imports, fresh_load = median(col("imports")), median(col("fresh", "load_seconds"))
    cold_fresh, cold_spare = median(col("cold_fresh")), median(col("cold_spare"))
    fresh_rest = max(0.0, cold_fresh - f["process_start"] - fresh_load - f["first_token"])
    spare_rest = max(0.0, cold_spare - s["handoff_listening"] - s["load_seconds"] - s["first_token"])
    plots.stacked(
        ["cold, spares off", "cold, spare waiting", "warm"],
        {"process start / hand-off": [f["process_start"], s["handoff_listening"], 0],
         "imports + lazy code": [max(0.0, fresh_load - s["load_seconds"]), 0, 0],
         "loading the weights": [s["load_seconds"], s["load_seconds"], 0],
         "first token": [f["first_token"], s["first_token"], median(col("warm"))],
         "router / other": [fresh_rest, spare_rest, 0]},
        "seconds", f"Time to first token for an unloaded model (imports alone: {imports:.2f} s)", img_dir / name)
    sec.plots.append(name)
    sec.data = {"runs": runs}
    return sec
