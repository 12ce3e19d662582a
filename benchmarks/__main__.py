"""Every comparison of modelplex against its peers, in one run, written to docs/benchmarks.md + docs/img/.

    python -m benchmarks              # full sizes (about 30 minutes on 2 CPU cores)
    python -m benchmarks --quick      # about 10 minutes, one repeat
    python -m benchmarks --smoke      # tiny sizes, for the test suite (without vLLM: engines is left out)
    python -m benchmarks --only routing,holding --repeats 5 --out /tmp/bench

Peers run from virtualenvs of their own (benchmarks/peers.py): LiteLLM proxy and vllm-router from
$MODELPLEX_BENCH_PEER_BIN, else .venv-peers; vLLM's CPU build (the engines and throughput comparisons, and
the vLLM backend of the routing one) from $MODELPLEX_BENCH_VLLM_PYTHON, else the venv of .ci/vllm-venv.sh.
Full and quick runs create the missing venvs first (a few minutes, once); the smoke run uses what is
there. A peer that is missing or fails is recorded on the page with its error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    engines,
    holding,
    memory_unload,
    peers,
    replicas,
    routing_overhead,
    scale_from_zero,
    structured,
    throughput,
    throughput_report,
    vllm_engine,
)
from benchmarks.report import Section, extract_section, machine, merge_sections, render_page, write

ROOT = Path(__file__).resolve().parent.parent
COMPARISONS = ("routing", "scale", "throughput", "structured", "memory", "holding", "engines", "replicas")
# vLLM's starts take a minute each, replicas start several runtimes per configuration: the smoke run (in the
# test suite) leaves them out unless --only names them.
SLOW = ("engines", "replicas")


def sizes(mode: str, repeats: int | None, vllm_replicas: bool = False) -> dict[str, object]:
    full = mode == "full"
    quick = mode == "quick"
    r = repeats or (3 if full else 1)
    return {
        "routing": routing_overhead.Sizes(requests=400 if full else 100 if quick else 24,
                                          warmup=20 if full else 8 if quick else 2,
                                          concurrency=(1, 16, 64) if not mode == "smoke" else (1, 4), repeats=r),
        "routing_backends": ("stub", "tiny", "vllm") if not mode == "smoke" else ("stub",),
        "routing_vllm": routing_overhead.Sizes(requests=100 if full else 30, warmup=8 if full else 4,
                                               concurrency=(1, 16), repeats=r),
        "scale": scale_from_zero.Sizes(repeats=r),
        "throughput": throughput.Sizes(mode=mode, repeats=r),
        "structured": structured.Sizes(mode=mode, repeats=r),
        "memory": memory_unload.Sizes(cycles=500 if full else 60 if quick else 10, repeats=1),
        "holding": holding.Sizes(requests=500 if not mode == "smoke" else 50,
                                 load_delay=3.0 if full else 2.0 if quick else 1.0,
                                 low_wait=0.5, repeats=r),
        "engines": engines.Sizes(repeats=r),
        # vLLM's replicas only in the full run (seven vLLM starts), or when asked for.
        "replicas": replicas.Sizes(requests=160 if full else 48 if quick else 8, concurrency=8, prompts=8,
                                   max_tokens=16,
                                   engines=("transformers", "vllm") if full or vllm_replicas else ("transformers",),
                                   repeats=r),
    }


def _guard(title: str, fn: Callable[[], Section]) -> Section:
    """A comparison that fails is recorded as failed on the page; the others still run."""
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc()
        sec = Section(title)
        sec.notes.append(f"**This comparison failed in this run:** `{type(exc).__name__}: {' '.join(str(exc).split())[:600]}`")
        sec.data = {"failed": f"{type(exc).__name__}: {exc}"}
        return sec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, to keep the entry point working in tests")
    parser.add_argument("--repeats", type=int, default=None, help="repeated runs per figure (full 3, quick and smoke 1)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(COMPARISONS)} (--smoke: "
                        f"all but {','.join(SLOW)})")
    parser.add_argument("--vllm-replicas", action="store_true",
                        help="the replicas comparison runs vLLM-engine replicas too (the full run always does)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for benchmarks.md and img/ (default docs/)")
    args = parser.parse_args(argv)
    run_mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default = [c for c in COMPARISONS if run_mode != "smoke" or c not in SLOW]
    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else default
    unknown = set(only) - set(COMPARISONS)
    if unknown:
        parser.error(f"unknown comparison(s): {', '.join(sorted(unknown))}; choose from {', '.join(COMPARISONS)}")
    if run_mode != "smoke":
        peers.prepare(only)
    sz = sizes(run_mode, args.repeats, args.vllm_replicas)
    img = args.out / "img"
    started = time.time()
    command = "python -m benchmarks" + ("" if run_mode == "full" else f" --{run_mode}") + (
        f" --repeats {args.repeats}" if args.repeats else "") + ("" if only == default else f" --only {','.join(only)}") + (
        " --vllm-replicas" if args.vllm_replicas else "")
    sections: list[Section] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir: Path | None = None
        vllm_model_dir: Path | None = None

        def tiny() -> Path:
            nonlocal model_dir
            if model_dir is None:
                from modelplex_runtime.engine.tiny import make_tiny_llama

                model_dir = make_tiny_llama(Path(tmp) / "tiny", hidden_size=64, num_layers=2, num_heads=4)
            return model_dir

        def vllm_model() -> Path:
            nonlocal vllm_model_dir
            if vllm_model_dir is None:
                vllm_model_dir = vllm_engine.make_model(Path(tmp) / "llama-256")
            return vllm_model_dir

        def routing() -> Section:
            results, failed = {}, {}
            for backend in sz["routing_backends"]:
                if backend != "vllm":
                    results[backend] = routing_overhead.measure_backend(
                        backend, sz["routing"], tiny() if backend == "tiny" else None)
                    continue
                try:  # vLLM missing or failing must not cost the other backends' figures
                    results[backend] = routing_overhead.measure_backend(backend, sz["routing_vllm"], vllm_model())
                except Exception as exc:
                    traceback.print_exc()
                    failed[backend] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            return routing_overhead.section(results, sz["routing"], img, failed)

        plan: dict[str, tuple[str, Callable[[], Section]]] = {
            "routing": ("Routing overhead", routing),
            "scale": ("Scale from zero", lambda: scale_from_zero.section(tiny(), sz["scale"], img)),
            "throughput": (throughput_report.TITLE, lambda: throughput_report.section(sz["throughput"], img)),
            "structured": ("Constrained decoding", lambda: structured.section(sz["structured"])),
            "memory": ("Unload frees memory", lambda: memory_unload.section(tiny(), sz["memory"], img)),
            "holding": ("Holding requests", lambda: holding.section(sz["holding"], img)),
            "engines": ("Engines: vLLM's cold start", lambda: engines.section(sz["engines"], img)),
            "replicas": ("Replicas and routing policies", lambda: replicas.section(
                replicas.run({"transformers": tiny(), "vllm": vllm_model()} if "vllm" in sz["replicas"].engines
                             else {"transformers": tiny()}, sz["replicas"]), sz["replicas"])),
        }
        for key in COMPARISONS:
            if key in only:
                title, fn = plan[key]
                print(f"[benchmarks] {title} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                sections.append(_guard(title, fn))
                print(f"[benchmarks] {title}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    page = args.out / "benchmarks.md"
    raw = args.out / "benchmarks.json"
    old = page.read_text(encoding="utf-8") if page.exists() else ""
    data = {s.title: s.data for s in sections}
    if set(only) < set(COMPARISONS) and old:
        # A partial run replaces its own sections and keeps the rest of the page (and of the raw figures).
        note = (f"Rerun on its own with `{command}`: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
                f"{time.time() - started:.0f} s, {machine()}. The other sections are from the run dated at the top.")
        for sec in sections:
            sec.intro.insert(0, note)
        text = merge_sections(old, sections, "img/")
        if raw.exists():
            data = {**json.loads(raw.read_text(encoding="utf-8")), **data}
    else:
        # the original single-runtime study stays on the page (python -m benchmarks.runtime_throughput --write-docs)
        text = render_page(sections, command, started, "img/", extract_section(old, "Runtime throughput"))
    write(page, text)
    write(raw, json.dumps(data, indent=1, default=str))
    print(page)


if __name__ == "__main__":
    main()
