"""A decode step of the packed batch path with each of its two decode-attention kernels, on one random Llama.

    python -m benchmarks.decode_attention                                   # hidden 2048, 16 layers, bf16
    python -m benchmarks.decode_attention --hidden 1024 --layers 8 --heads 16 --dtype f32

In this process: the engine's model and slot cache, ``batch`` sequences each with ``context`` tokens
cached, one decoding token each; the whole forward of that step (every layer, logits for every row) is
timed ``repeats`` times per kernel, the kernels alternating, and the median reported:
- fused: one ``scaled_dot_product_attention`` over a strided view of the slots (what bf16/fp16 use);
- matmuls: two matmuls and a softmax (what float32 uses).
``packed_attention.fused_decode`` picks between them by dtype; this is the measurement behind that choice.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DTYPES = {"f32": "float32", "bf16": "bf16", "fp16": "float16"}


def _step(core: Any, batch: int, context: int) -> float:
    import torch

    from modelplex_runtime.engine.packed_attention import LAYOUT_KWARG, StepLayout

    layout = StepLayout(core.cache, list(range(batch)), [context] * batch, [])
    ids = torch.randint(0, 256, (1, batch))
    started = time.perf_counter()
    with torch.inference_mode():
        core.model(input_ids=ids, position_ids=layout.positions, use_cache=False,
                   logits_to_keep=torch.arange(batch), **{LAYOUT_KWARG: layout})
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from modelplex_runtime.engine import packed_attention
    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine.tiny import make_tiny_llama
    from modelplex_runtime.engine_api import EngineOptions
    from modelplex_spec import ModelEntry

    chosen = packed_attention.fused_decode
    batches = [int(b) for b in args.batch.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_llama(Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=args.heads)
        entry = ModelEntry.model_validate({"Plain": {"model_id": str(model_dir), "dtype": DTYPES[args.dtype]}})
        engine: Any = load_engine(entry, EngineOptions(device="cpu", max_batch_size=max(batches),
                                                       kv_cache_bytes=args.kv_cache_gib << 30))
        core = engine._batcher.core
        engine_uses = "fused" if chosen(next(core.model.parameters()).dtype) else "matmuls"
        try:
            for batch in batches:
                core.cache.rebuild([], batch, args.context + 64)
                if core.threads is not None:
                    core.threads.choose(batch)
                times: dict[str, list[float]] = {"fused": [], "matmuls": []}
                for i in range(args.repeats + 1):  # the first of each is a warm-up
                    for kernel in times:
                        packed_attention.fused_decode = (lambda _d: True) if kernel == "fused" else (lambda _d: False)
                        took = _step(core, batch, args.context)
                        if i:
                            times[kernel].append(took)
                rows.append({"batch": batch, **{k: 1000 * statistics.median(v) for k, v in times.items()}})
        finally:
            packed_attention.fused_decode = chosen
            engine.shutdown()
    return [{**r, "engine_uses": engine_uses} for r in rows]


def render(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [f"random Llama hidden {args.hidden}, {args.layers} layers, {args.heads} heads, {args.dtype}; "
             f"{args.context} tokens of context per sequence; median of {args.repeats} steps; "
             f"the engine uses: {rows[0]['engine_uses'] if rows else '?'}", "",
             "| sequences | decode step, fused SDPA (ms) | decode step, two matmuls (ms) | matmuls / fused |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['fused']:.0f} | {r['matmuls']:.0f} | {r['matmuls'] / r['fused']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--batch", default="1,16,32,64", help="comma-separated numbers of decoding sequences")
    parser.add_argument("--context", type=int, default=300, help="tokens cached per sequence")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kv-cache-gib", type=int, default=8)
    args = parser.parse_args(argv)
    print(render(args, measure(args)))


if __name__ == "__main__":
    main()
