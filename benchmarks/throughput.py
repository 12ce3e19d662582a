"""Comparison 3 — runtime throughput: the modelplex runtime against vLLM's CPU build, ``transformers serve``
(plain and continuous batching) and the offline ``model.generate`` limit, on three model shapes.

- tiny: the shape the earlier figures used (hidden 256), where per-token overhead decides;
- hidden 1024, 8 layers, 16 heads: a realistic width, where the model's compute decides;
- hidden 2048, 16 layers, 32 heads: a larger one, in bf16 when this CPU runs bf16 matmuls at least at
  80% of the speed of f32 (checked at the start of the run), else f32.

Servers run one at a time, each over the same distinct prompts (``runtime_throughput.make_prompts``),
with the same lean streaming client. Measurement lives here; the page's section is built by
``throughput_report``.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import runtime_profile
from benchmarks import runtime_throughput as rt
from benchmarks import served_peers as sp

# A server whose point took longer than this is not measured at higher concurrencies (plain
# `transformers serve` runs one request at a time, so its time grows with the number of requests).
POINT_LIMIT_S = 900.0


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    prompt_words: int
    max_tokens: int
    concurrency: tuple[int, ...]
    per_user: int  # requests per simulated user at each point (at least min_requests in all)
    min_requests: int
    repeats: int
    servers: tuple[str, ...]
    plain_serve_up_to: int  # plain transformers serve is measured up to this concurrency
    kv_cache_gib: int  # the KV cache bound, the same for the modelplex runtime and vLLM (whole GiB for vLLM)
    pairs: int = 0  # served runs at c16 sandwiched between offline runs (the goal against offline generate)
    dtype: str = "f32"  # "auto": bf16 if this CPU runs it well, else f32
    profile: tuple[int, int] | None = None  # (prompts, tokens) of the profile of both batch paths

    def requests(self, c: int) -> int:
        return max(self.min_requests, self.per_user * c)

    @property
    def c16(self) -> int:
        return 16 if 16 in self.concurrency else max(self.concurrency)


@dataclass
class Sizes:
    mode: str
    repeats: int

    @property
    def shapes(self) -> list[Shape]:
        r = self.repeats
        if self.mode == "smoke":
            return [Shape("tiny", 64, 1, 4, 8, 4, (1, 4), 2, 8, r, (sp.MODELPLEX, sp.TF_CB, sp.TF_SERVE), 4, 1,
                          pairs=1, profile=(4, 4))]
        if self.mode == "quick":
            return [Shape("tiny", 256, 2, 4, 16, 16, (1, 4, 16, 64), 8, 8, r, sp.ALL, 64, 1, pairs=1),
                    Shape("hidden 1024", 1024, 8, 16, 200, 64, (1, 16), 1, 4, 1, (sp.MODELPLEX, sp.VLLM), 1, 2,
                          profile=(8, 8))]
        conc = (1, 4, 16, 32, 64)
        return [Shape("tiny", 256, 4, 4, 24, 32, conc, 8, 8, r, sp.ALL, 64, 1, pairs=5),
                Shape("hidden 1024", 1024, 8, 16, 200, 64, conc, 2, 8, 1, sp.ALL, 4, 2, profile=(16, 32)),
                Shape("hidden 2048", 2048, 16, 32, 200, 64, conc, 1, 4, 1, sp.ALL, 1, 6, dtype="auto")]


def bf16_speed() -> float:
    """bf16 matmul speed as a share of f32's on this CPU (a 256 x 2048 x 2048 product, best of 3)."""
    import torch

    def best(dtype: Any) -> float:
        a, b = torch.randn(256, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        times = []
        for _ in range(3):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


def _sweep(url: str, prompts: list[str], shape: Shape, extra: dict[str, Any] | None,
           concurrency: tuple[int, ...]) -> tuple[dict[int, dict[str, float]], str | None]:
    out: dict[int, dict[str, float]] = {}
    for c in concurrency:
        started = time.perf_counter()
        out[c] = asyncio.run(rt.served_run(url, prompts[: shape.requests(c)], c, shape.max_tokens, extra))
        if time.perf_counter() - started > POINT_LIMIT_S and c != concurrency[-1]:
            return out, f"stopped after concurrency {c}, which took {time.perf_counter() - started:.0f} s"
    return out, None


def _runtime_pairs(url: str, prompts: list[str], shape: Shape, offline: rt.Offline,
                   ) -> list[tuple[float, dict[str, float]]]:
    """Served runs at c16, each between two offline runs (their mean is its baseline): on a shared machine
    whose speed drifts between minutes, the ratio of neighbours is a steadier estimate than the ratio of
    medians taken minutes apart, and the sandwich cancels a drift during the served run."""
    paired = []
    for _ in range(shape.pairs):
        before = offline.batched(offline.default_threads)
        served = asyncio.run(rt.served_run(url, prompts[: shape.requests(shape.c16)], shape.c16, shape.max_tokens))
        after = offline.batched(offline.default_threads)
        paired.append(((before + after) / 2, served))
    return paired


def measure_shape(shape: Shape, workdir: Path) -> dict[str, Any]:
    from modelplex_runtime.engine.tiny import make_tiny_llama

    result: dict[str, Any] = {"shape": shape.__dict__, "errors": {}, "notes": {}}
    dtype = shape.dtype
    if dtype == "auto":
        result["bf16_speed"] = bf16_speed()
        dtype = "bf16" if result["bf16_speed"] >= 0.8 else "f32"
    result["dtype"] = dtype
    model_dir = make_tiny_llama(workdir / shape.name.replace(" ", "-"), hidden_size=shape.hidden,
                                num_layers=shape.layers, num_heads=shape.heads)
    most = max(shape.requests(c) for c in shape.concurrency)
    prompts = rt.make_prompts(rt.Config(shape.hidden, shape.layers, most, shape.prompt_words, shape.max_tokens,
                                        shape.concurrency, shape.repeats))
    setup = sp.ModelSetup(model_dir, dtype, shape.kv_cache_gib, max(shape.concurrency))
    runs: dict[str, dict[int, list[dict[str, float]]]] = {s: {c: [] for c in shape.concurrency} for s in shape.servers}
    result.update(runs=runs, offline=[], pairs={"default": [], "per_token": []})
    batch = min(16, len(prompts))
    result["offline_batch"] = batch
    offline: rt.Offline | None = rt.Offline(model_dir, prompts[:batch], shape.max_tokens, dtype=dtype)
    if shape.profile:
        n, tokens = shape.profile
        result["profile"] = {path: runtime_profile.profile_path(model_dir, path, prompts[:n], tokens)
                             for path in ("padded", "auto")}
    for repeat in range(shape.repeats):
        assert offline is not None
        result["offline"].append(offline.batched(offline.default_threads))
        if not shape.pairs:  # the offline model is only needed between served runs for the pairs
            offline = None
            gc.collect()
        servers = shape.servers[repeat % len(shape.servers):] + shape.servers[: repeat % len(shape.servers)]
        for server in servers:
            if server in result["errors"]:
                continue
            conc = tuple(c for c in shape.concurrency if server != sp.TF_SERVE or c <= shape.plain_serve_up_to)
            try:
                proc, extra = sp.start(server, setup)
                try:
                    sweep, note = _sweep(proc.url, prompts, shape, extra, conc)
                    if server == sp.MODELPLEX and shape.pairs and offline is not None:
                        result["pairs"]["default"] += _runtime_pairs(proc.url, prompts, shape, offline)
                finally:
                    proc.stop()
                if server == sp.MODELPLEX and shape.pairs and offline is not None:
                    proc, _ = sp.start(server, setup, ("--stream-interval-ms", "0"))
                    try:
                        asyncio.run(rt.served_run(proc.url, prompts[: 2 * shape.c16], shape.c16, shape.max_tokens))
                        result["pairs"]["per_token"] += _runtime_pairs(proc.url, prompts, shape, offline)
                    finally:
                        proc.stop()
            except Exception as exc:
                result["errors"][server] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
                continue
            if note:
                result["notes"][server] = note
            for c, r in sweep.items():
                runs[server][c].append(r)
        if offline is None and repeat + 1 < shape.repeats:
            offline = rt.Offline(model_dir, prompts[:batch], shape.max_tokens, dtype=dtype)
    return result


def measure(sizes: Sizes) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [measure_shape(shape, Path(tmp)) for shape in sizes.shapes]
