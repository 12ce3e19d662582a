"""A quick paired A/B of the modelplex runtime against vLLM's CPU build on one model shape.

    python -m benchmarks.paired_vllm --hidden 1024 --layers 8 --heads 16 --rounds 2 --concurrency 1,16,32

Both servers are up at once (``--alone``: only the one measured, started for its run) and take the load one
at a time, alternating which goes first; every run sends
prompts neither server has seen (vLLM's prefix cache finds nothing to reuse). On a machine whose speed drifts
between minutes (a shared one), the ratio of neighbouring runs is steadier than figures taken minutes apart.
It reports each pair's ratio, the medians and the CPU the idle server used meanwhile. The full comparison with
every peer and shape is the throughput section of ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import runtime_throughput as rt
from benchmarks import served_peers as sp

MODELPLEX, VLLM = "modelplex", "vllm"
SERVER = {MODELPLEX: sp.MODELPLEX, VLLM: sp.VLLM}


def _measure(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    conc = tuple(int(c) for c in args.concurrency.split(","))
    requests = {c: max(4, c) for c in conc}
    prompts = rt.make_prompts(rt.Config(args.hidden, args.layers, args.rounds * sum(requests.values()) * 2 + 1,
                                        args.prompt_words, args.max_tokens, conc, args.rounds))
    setup = sp.ModelSetup(model_dir, args.dtype, args.kv_cache_gib, max(conc))
    servers: dict[str, tuple[Any, Any]] = {}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {s: {c: [] for c in conc} for s in (MODELPLEX, VLLM)}
    idle: dict[str, list[float]] = {MODELPLEX: [], VLLM: []}
    try:
        if not args.alone:
            servers[MODELPLEX] = sp.start(SERVER[MODELPLEX], setup)
            servers[VLLM] = sp.start(SERVER[VLLM], setup)
        cursor = 0
        for r in range(args.rounds):
            for i, c in enumerate(conc):
                for name in ((MODELPLEX, VLLM) if (r + i) % 2 == 0 else (VLLM, MODELPLEX)):
                    other = VLLM if name == MODELPLEX else MODELPLEX
                    if args.alone:  # only this server is up: started for its turn, stopped after it
                        servers[name] = sp.start(SERVER[name], setup)
                    proc, extra = servers[name]
                    before, started = servers[other][0].cpu_seconds() if other in servers else 0.0, time.perf_counter()
                    try:
                        out = asyncio.run(rt.served_run(proc.url, prompts[cursor: cursor + requests[c]], c,
                                                        args.max_tokens, extra))
                    finally:
                        if args.alone:
                            servers.pop(name)[0].stop()
                    cursor += requests[c]
                    if other in servers:
                        idle[other].append((servers[other][0].cpu_seconds() - before) / (time.perf_counter() - started))
                    if out["tps"] == 0:
                        raise RuntimeError(f"{name} generated no tokens at concurrency {c} (did it crash? see its log)")
                    out["load"] = os.getloadavg()[0]
                    runs[name][c].append(out)
                    print(f"round {r} c={c} {name}: {out['tps']:.1f} tokens/s, TTFT p50 {out['ttft_p50']:.2f} s "
                          f"p99 {out['ttft_p99']:.2f} s (load {out['load']:.1f})", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.stop()
    summary = {}
    for c in conc:
        mine, theirs = runs[MODELPLEX][c], runs[VLLM][c]
        summary[c] = {
            "modelplex_tps": statistics.median(x["tps"] for x in mine),
            "vllm_tps": statistics.median(x["tps"] for x in theirs),
            "ratios": [m["tps"] / v["tps"] for m, v in zip(mine, theirs, strict=True)],
            "modelplex_ttft_p50": statistics.median(x["ttft_p50"] for x in mine),
            "vllm_ttft_p50": statistics.median(x["ttft_p50"] for x in theirs),
        }
    return {"summary": summary, "runs": runs, "idle_cpu": {k: statistics.mean(v) for k, v in idle.items() if v}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--concurrency", default="1,16,32")
    p.add_argument("--prompt-words", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--kv-cache-gib", type=int, default=2)
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32", help="the weights' dtype, both servers")
    p.add_argument("--json", type=Path, help="write every run here")
    p.add_argument("--alone", action="store_true", help="one server up at a time, started for each of its runs "
                   "(for shapes whose two servers do not fit in memory together; the start is not measured)")
    args = p.parse_args(argv)
    from modelplex_runtime.engine.tiny import make_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_llama(Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=args.heads)
        result = _measure(args, model_dir)
    for c, s in result["summary"].items():
        print(f"c={c}: modelplex {s['modelplex_tps']:.1f} vs vLLM {s['vllm_tps']:.1f} tokens/s, ratio median "
              f"{statistics.median(s['ratios']):.2f} (pairs {', '.join(f'{x:.2f}' for x in s['ratios'])}); TTFT p50 "
              f"{s['modelplex_ttft_p50']:.2f} s vs {s['vllm_ttft_p50']:.2f} s")
    if result["idle_cpu"]:
        print("idle server's CPU share while the other ran:", {k: round(v, 3) for k, v in result["idle_cpu"].items()})
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
