"""Where the served runtime's tokens/s goes against offline ``model.generate``: the engine alone, then served.

    python -m benchmarks.engine_vs_offline                       # the quick tiny shape, 4 rounds (about a minute)
    python -m benchmarks.engine_vs_offline --hidden 512 --layers 4 --prompt-words 24 --max-tokens 64

Each round runs, on one random Llama and the same distinct prompts, at the same concurrency:
- offline batched ``model.generate`` over 16 prompts (in this process), before and after the others (their
  mean is the round's baseline: the ratio of neighbours is steadier than one of medians on a shared machine);
- the engine in this process, no HTTP: ``TextEngine.generate`` called by a closed loop that keeps
  ``concurrency`` requests in flight (a new one when one finishes), exactly ``max_tokens`` tokens each;
- the runtime as a server (its own process, its defaults), streamed to by the throughput benchmark's client,
  with the CPU seconds the client, the runtime's event loop (its main thread) and its other threads (the
  batcher and torch's workers) used during the run.
So the gap between served and offline splits into the engine's part and the serving part.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import runtime_throughput as rt
from benchmarks import served_peers as sp
from benchmarks.processes import Proc


def closed_loop(engine: Any, prompts: list[list[int]], concurrency: int, max_tokens: int) -> float:
    """Tokens/s of ``prompts`` through ``engine`` with ``concurrency`` requests in flight."""
    from modelplex_runtime.engine_api import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    slots, finished = threading.Semaphore(concurrency), threading.Semaphore(0)

    def on_event(ev: Any) -> None:
        if ev.finish_reason:
            slots.release()
            finished.release()

    started = time.perf_counter()
    for ids in prompts:
        if not slots.acquire(timeout=600):
            raise TimeoutError("no request finished within 10 minutes")
        engine.generate(ids, params, on_event)
    for _ in prompts:
        if not finished.acquire(timeout=600):
            raise TimeoutError("a request did not finish within 10 minutes")
    return len(prompts) * max_tokens / (time.perf_counter() - started)


def _thread_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds of each of ``proc``'s threads."""
    return {t.id: t.user_time + t.system_time for t in proc.threads()}


def served(server: Proc, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, float]:
    """One served run, with the CPU seconds per second of wall time of the client and the runtime's threads."""
    # The client's own CPU time comes from the kernel's per-process clock (nanoseconds); the runtime's threads
    # are read from /proc in clock ticks, so a short run can read 0 for a thread that barely ran.
    me0, th0, t0 = time.process_time(), _thread_cpu(server.ps), time.perf_counter()
    out = asyncio.run(rt.served_run(server.url, prompts, concurrency, max_tokens))
    me1, th1, wall = time.process_time(), _thread_cpu(server.ps), time.perf_counter() - t0
    used = {tid: max(0.0, s - th0.get(tid, 0.0)) for tid, s in th1.items()}
    main = server.ps.pid  # the main thread's id is the process id: the runtime's event loop
    out["client_cpu"] = max(0.0, me1 - me0) / wall
    out["event_loop_cpu"] = used.get(main, 0.0) / wall
    out["other_threads_cpu"] = sum(s for tid, s in used.items() if tid != main) / wall
    return out


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine.tiny import make_tiny_llama
    from modelplex_runtime.engine_api import EngineOptions
    from modelplex_spec import ModelEntry

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_llama(Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=args.heads)
        prompts = rt.make_prompts(rt.Config(args.hidden, args.layers, args.requests, args.prompt_words,
                                            args.max_tokens, (args.concurrency,), args.rounds))
        offline = rt.Offline(model_dir, prompts[:16], args.max_tokens)
        engine = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(model_dir)}}),
                             EngineOptions(device="cpu", max_batch_size=max(64, args.concurrency)))
        server, _ = sp.start(sp.MODELPLEX, sp.ModelSetup(model_dir, "f32", 1, max(64, args.concurrency)))
        rounds = []
        try:
            ids = [engine.tokenize_text(p) for p in prompts]
            closed_loop(engine, ids[:32], args.concurrency, args.max_tokens)  # warm-up, both
            asyncio.run(rt.served_run(server.url, prompts[:32], args.concurrency, args.max_tokens))
            for _ in range(args.rounds):
                before = offline.batched(offline.default_threads)
                in_process = closed_loop(engine, ids, args.concurrency, args.max_tokens)
                serve = served(server, prompts, args.concurrency, args.max_tokens)
                after = offline.batched(offline.default_threads)
                rounds.append({"offline": (before + after) / 2, "engine": in_process, **serve})
        finally:
            server.stop()
            engine.shutdown()
    return rounds


def render(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> str:
    lines = [f"random Llama hidden {args.hidden}, {args.layers} layers; {args.requests} requests of "
             f"{args.prompt_words}-word prompts, {args.max_tokens} tokens each, concurrency {args.concurrency}",
             "", "| round | offline tokens/s | engine in process | served | engine / offline | served / offline | "
             "CPU/s: client, event loop, other runtime threads |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['offline']:.0f} | {r['engine']:.0f} | {r['tps']:.0f} | {r['engine'] / r['offline']:.0%} "
                     f"| {r['tps'] / r['offline']:.0%} | {r['client_cpu']:.2f}, {r['event_loop_cpu']:.2f}, "
                     f"{r['other_threads_cpu']:.2f} |")
    med = {k: statistics.median(r[k] / r["offline"] for r in rounds) for k in ("engine", "tps")}
    lines += ["", f"medians: engine {med['engine']:.0%} of offline, served {med['tps']:.0%}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--prompt-words", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    print(render(args, measure(args)))


if __name__ == "__main__":
    main()
