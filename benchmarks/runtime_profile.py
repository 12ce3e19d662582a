"""Where a batch step spends its time, on each batch path: the padded path (left-padded batches over a
concatenated ``DynamicCache``, the runtime's batcher before the packed path) and the packed path.

In the benchmark process, ``requests`` prompts are submitted together to an engine on each path and
run to the end under ``torch.profiler``; each step's wall time is split into prefill steps (steps that
read prompt tokens) and decode-only steps, and torch's operator time into categories. Wall time that
no operator accounts for is Python: scheduling, sampling bookkeeping, detokenization, module calls.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

CATEGORIES = {
    "matmul": ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
                  "aten::_scaled_dot_product_attention_math", "aten::_softmax", "aten::softmax",
                  "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
                  "aten::masked_fill_"),
    "KV cache copies": ("aten::cat", "aten::index_put_", "aten::_index_put_impl_", "aten::index_select",
                        "aten::copy_", "aten::zeros", "aten::index", "aten::_to_copy", "aten::fill_"),
}


def _category(op: str) -> str:
    for name, ops in CATEGORIES.items():
        if op in ops:
            return name
    return "elementwise, norms, other ops"


def profile_path(model_dir: Path, batch_path: str, prompts: list[str], max_tokens: int,
                 dtype: str = "auto") -> dict[str, Any]:
    import torch

    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine_api import EngineOptions, SamplingParams, TokenEvent
    from modelplex_spec import ModelEntry

    engine: Any = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(model_dir), "dtype": dtype}}),
                              EngineOptions(device="cpu", max_batch_size=len(prompts), batch_path=batch_path))
    core = engine._batcher.core
    steps: list[tuple[bool, float, int]] = []  # (read prompt tokens, seconds, sequences)
    step = core.step
    # The profiler runs on the batcher's thread (torch records the ops of the thread that started it):
    # it starts with the first step of the measured run and stops after the step that ends it.
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    state = {"measuring": False, "profiling": False, "left": len(prompts)}

    def reads_prompts() -> bool:
        if hasattr(core, "_admitted"):  # the padded path prefills what it admitted
            return bool(core._admitted)
        return any(s.cached < len(s.prompt_ids) for s in core.running)

    def timed_step() -> None:
        if state["measuring"] and not state["profiling"]:
            prof.start()
            state["profiling"] = True
        prefill, n = reads_prompts(), len(core.running) + len(getattr(core, "_admitted", []))
        t0 = time.perf_counter()
        step()
        if state["profiling"]:
            steps.append((prefill, time.perf_counter() - t0, n))
            if state["left"] == 0:
                prof.stop()
                state["profiling"] = state["measuring"] = False
                done.set()

    core.step = timed_step
    done = threading.Event()
    try:
        ids = [engine.tokenize_text(p) for p in prompts]
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)

        def on_event(ev: TokenEvent) -> None:
            if ev.finish_reason:
                state["left"] -= 1

        warm = threading.Event()
        engine.generate(ids[0][:8], SamplingParams(max_tokens=2, temperature=0), lambda ev: ev.finish_reason and warm.set())
        warm.wait(300)
        state["measuring"] = True
        started = time.perf_counter()
        for p in ids:
            engine.generate(p, params, on_event)
        if not done.wait(3600):
            raise TimeoutError(f"the profiled run on the {batch_path} path did not finish within an hour")
        wall = time.perf_counter() - started
    finally:
        engine.shutdown()
    ops: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        ops[_category(evt.key)] += evt.self_cpu_time_total / 1e6
    # Operator time can exceed the steps' wall time (ops outside the steps, timer overlap): never above 100%.
    step_time = sum(t for _, t, _ in steps)
    op_time = sum(ops.values())
    scale = min(1.0, step_time / op_time) if op_time else 0.0
    shares = {k: v * scale / step_time for k, v in ops.items()} if step_time else {}
    shares["Python (outside torch ops)"] = max(0.0, 1.0 - sum(shares.values()))
    prefill = [t for p, t, _ in steps if p]
    decode = [(t, n) for p, t, n in steps if not p]
    full = [t for t, n in decode if n == len(prompts)]
    return {
        "path": batch_path, "wall_s": wall, "tokens_per_s": len(ids) * max_tokens / wall, "steps": len(steps),
        "prefill_steps": len(prefill), "prefill_s": sum(prefill),
        "decode_steps": len(decode), "decode_s": sum(t for t, _ in decode),
        "decode_step_full_ms": 1000 * sum(full) / len(full) if full else float("nan"),
        "shares": shares,
    }
