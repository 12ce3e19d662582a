"""The runtime-throughput comparison and the batch path's GPU guarantees, on a CUDA machine.

    python -m benchmarks.gpu_check                 # a few minutes on one GPU; writes gpu_check.json
    python -m benchmarks.gpu_check --out DIR       # where the JSON goes (default: $OUT or the current folder)
    python -m benchmarks.gpu_check --device cpu --smoke   # the script itself on a tiny model, no GPU (the test suite)
    MODELPLEX_BENCH_VLLM_PYTHON=/path/to/python    # a Python with vLLM's CUDA build: adds vLLM to the comparison

Self-contained: the models are random Llamas written here (no download), the runtime is this checkout's.
It checks, in the benchmark process:
- greedy output of a batch equals each sequence's output alone, on the GPU;
- a decode step copies only the sampled token ids to the host (no logits): device-to-host bytes per step
  under torch.profiler;
- the KV cache stays within ``--kv-cache-gib``-style budget: a small budget preempts, output unchanged;
- an out-of-memory error in one step fails that one sequence and the others finish (the process is
  given little headroom with ``torch.cuda.set_per_process_memory_fraction`` and a long prompt joins);
then serves the hidden-1024 and hidden-2048 models (bf16) with the modelplex runtime (and vLLM when
given) at concurrency 1, 16, 32 and 64 over the same client as the CPU benchmark, beside offline
batched ``model.generate``.

``--device cpu --smoke`` runs the same code on one tiny model in f32, so that the script is known to work
before a GPU machine's minutes are spent on it; the checks that need CUDA (device-to-host traffic, the
out-of-memory one) are reported as not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import runtime_throughput as rt
from benchmarks import served_peers as sp

CUDA_ONLY = "not run: needs a CUDA device"


@dataclass(frozen=True)
class Plan:
    device: str
    dtype: str
    shapes: tuple[tuple[str, int, int, int], ...]  # (name, hidden, layers, heads); the first one is checked
    concurrency: tuple[int, ...]
    prompt_words: int
    max_tokens: int
    kv_cache_gib: int


def plan(device: str, smoke: bool) -> Plan:
    dtype = "bf16" if device == "cuda" else "f32"
    if smoke:
        return Plan(device, dtype, (("tiny", 64, 2, 4),), (1, 4), 8, 8, 1)
    return Plan(device, dtype, (("hidden 1024", 1024, 8, 16), ("hidden 2048", 2048, 16, 32)), (1, 16, 32, 64), 200, 64, 20)


def _engine(model_dir: Path, p: Plan, **options: Any) -> Any:
    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine_api import EngineOptions
    from modelplex_spec import ModelEntry

    return load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(model_dir), "dtype": p.dtype}}),
                       EngineOptions(device=p.device, **options))


def _generate(engine: Any, prompts: list[list[int]], max_tokens: int) -> list[tuple[str, str | None]]:
    from modelplex_runtime.engine_api import SamplingParams

    out: list[list[Any]] = [[] for _ in prompts]
    done = threading.Semaphore(0)
    for i, p in enumerate(prompts):
        def on_event(ev: Any, i: int = i) -> None:
            out[i].append(ev)
            if ev.finish_reason:
                done.release()
        engine.generate(p, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True), on_event)
    for _ in prompts:
        if not done.acquire(timeout=600):
            raise TimeoutError("a generation did not finish in 10 minutes")
    return [("".join(e.text for e in evs), evs[-1].error) for evs in out]


def _device_to_host(engine: Any, prompts: list[list[int]]) -> dict[str, Any]:
    """Device-to-host traffic of decode steps: only the sampled ids should come back."""
    import torch

    _generate(engine, prompts, 4)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        _generate(engine, prompts, 16)
    dtoh = [e for e in prof.events() if "Memcpy DtoH" in e.name]
    return {"device_to_host_copies": len(dtoh), "device_to_host_bytes_per_copy_max": max(
        (int(e.kwinputs.get("bytes", 0)) if getattr(e, "kwinputs", None) else 0 for e in dtoh), default=0)}


def check_engine(model_dir: Path, p: Plan) -> dict[str, Any]:
    import torch

    from modelplex_runtime.engine.packed_setup import kv_shape

    checks: dict[str, Any] = {}
    engine = _engine(model_dir, p)
    try:
        checks["batch_path"] = engine.info.extra.get("batch_path")
        prompts = [engine.tokenize_text(t) for t in rt.make_prompts(rt.Config(0, 0, 4, 40, 0, (), 1))]
        solo = [_generate(engine, [ids], 32)[0] for ids in prompts]
        checks["batched_equals_solo"] = _generate(engine, prompts, 32) == solo
        checks.update(_device_to_host(engine, prompts) if p.device == "cuda" else {"device_to_host_copies": CUDA_ONLY})
    finally:
        engine.shutdown()
    # a KV budget too small for all four at once: preemption, the same text
    per_token = kv_shape(engine.model, torch.device(p.device)).bytes_per_token
    small = _engine(model_dir, p, kv_cache_bytes=2 * (max(map(len, prompts)) + 32) * per_token)
    try:
        checks["small_kv_budget_equals_solo"] = _generate(small, prompts, 32) == solo
        checks["preemptions"] = small.batch_stats().preemptions
        checks["small_kv_budget_preempted"] = checks["preemptions"] > 0
    finally:
        small.shutdown()
    if p.device == "cuda":
        checks.update(_out_of_memory(model_dir, p, prompts))
    else:
        checks["oom_fails_the_long_one"] = CUDA_ONLY
    return checks


def _out_of_memory(model_dir: Path, p: Plan, prompts: list[list[int]]) -> dict[str, Any]:
    """Out of memory in one step: little headroom, then a long prompt joins a running batch."""
    import torch

    checks: dict[str, Any] = {}
    tight = _engine(model_dir, p, max_step_tokens=8192)
    try:
        torch.cuda.empty_cache()
        _, total = torch.cuda.mem_get_info()
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + (96 << 20)) / total))
        long = (prompts[0] * 200)[:8000]
        results: list[Any] = []
        runner = threading.Thread(target=lambda: results.extend(_generate(tight, prompts[1:], 200)))
        runner.start()
        time.sleep(0.5)
        failed = _generate(tight, [long], 4)[0]
        runner.join(600)
        checks["oom_fails_the_long_one"] = failed[1] is not None and "out of memory" in failed[1]
        checks["oom_spares_the_others"] = len(results) == 3 and all(err is None for _, err in results)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        tight.shutdown()
    return checks


def serve(model_dir: Path, p: Plan, servers: list[str]) -> dict[str, Any]:
    most = max(p.concurrency)
    prompts = rt.make_prompts(rt.Config(0, 0, 2 * most, p.prompt_words, p.max_tokens, p.concurrency, 1))
    setup = sp.ModelSetup(model_dir, p.dtype, p.kv_cache_gib, most)
    out: dict[str, Any] = {}
    for server in servers:
        if server == sp.MODELPLEX:
            proc, extra = sp.start(server, setup, ("--device", p.device))
        else:
            proc, extra = sp.start(server, setup)
        try:
            out[server] = {c: asyncio.run(rt.served_run(proc.url, prompts[: 2 * c], c, p.max_tokens, extra))
                           for c in p.concurrency}
        finally:
            proc.stop()
    offline = rt.Offline(model_dir, prompts[:16], p.max_tokens, device=p.device, dtype=p.dtype)
    out["offline batched generate (16 prompts)"] = offline.batched(offline.default_threads)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: try the script itself without a GPU (with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="one tiny model, concurrency 1 and 4")
    args = parser.parse_args(argv)
    import torch

    from modelplex_runtime.engine.tiny import make_tiny_llama

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine (or --device cpu --smoke to try the script)")
    p = plan(args.device, args.smoke)
    servers = [sp.MODELPLEX] + ([sp.VLLM] if os.environ.get("MODELPLEX_BENCH_VLLM_PYTHON") else [])
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    report: dict[str, Any] = {"device": name, "plan": p.__dict__, "servers": servers}
    with tempfile.TemporaryDirectory() as tmp:
        for shape, hidden, layers, heads in p.shapes:
            model_dir = make_tiny_llama(Path(tmp) / shape.replace(" ", "-"), hidden_size=hidden, num_layers=layers,
                                        num_heads=heads, max_position_embeddings=16384)
            if "checks" not in report:
                report["checks"] = check_engine(model_dir, p)
                print(json.dumps(report["checks"]), flush=True)
            report[shape] = serve(model_dir, p, servers)
            print(json.dumps({shape: report[shape]}, default=str), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    failed = [k for k, v in report["checks"].items() if v is False]
    print("checks failed: " + ", ".join(failed) if failed else "all checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
