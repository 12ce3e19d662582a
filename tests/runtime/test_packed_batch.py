"""The packed batch path: step planning and cache sizing (pure), then the path itself on the tiny model.

A sequence gives the same greedy tokens however it is batched: alone, joining a running batch with its
prompt spread over several steps, preempted and recomputed under a small KV budget, or next to a
sequence that an out-of-memory error fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from modelplex_runtime.engine.batcher import ContinuousBatcher
from modelplex_runtime.engine.kv_slots import SlotCache, capacity
from modelplex_runtime.engine.loader import load_engine
from modelplex_runtime.engine.packed_core import PackedCore
from modelplex_runtime.engine.packed_setup import enable_packed
from modelplex_runtime.engine.step_plan import step_tokens
from modelplex_runtime.engine.text_engine import eos_token_ids
from modelplex_runtime.engine_api import EngineOptions, SamplingParams, TokenEvent
from modelplex_spec import ModelEntry

CPU = torch.device("cpu")
GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


def test_step_tokens_feed_every_decoder_and_chunk_prompts_oldest_first() -> None:
    assert step_tokens([1, 1, 1], 512) == [1, 1, 1]
    assert step_tokens([300, 1, 400, 1], 512) == [300, 1, 210, 1]
    assert step_tokens([1000], 512) == [512]
    # decoders past the budget still feed; prefill keeps a quarter of the budget
    assert step_tokens([1] * 20 + [100], 16) == [1] * 20 + [4]
    assert step_tokens([50, 50, 50], 64) == [50, 14, 0]


def test_capacity_grows_by_steps_and_stays_within_the_budget() -> None:
    assert capacity(0, 0, 1, 10, 32, 2048, 10_000) == (1, 64)
    assert capacity(1, 64, 2, 10, 32, 2048, 10_000) == (2, 64)  # rows double
    assert capacity(4, 64, 5, 10, 32, 2048, 10_000) == (8, 64)
    assert capacity(8, 256, 8, 257, 32, 2048, 10_000) == (8, 320)  # columns: at least a quarter more
    assert capacity(8, 64, 8, 10, 8, 2048, 10_000) == (8, 64)
    assert capacity(8, 64, 9, 10, 8, 2048, 10_000) is None  # past the batch size
    assert capacity(4, 512, 8, 512, 32, 2048, 4096) == (8, 512)
    assert capacity(4, 512, 5, 512, 32, 2048, 4096) == (8, 512)
    assert capacity(4, 512, 5, 512, 32, 2048, 3000) == (5, 512)  # fewer spare rows near the budget
    assert capacity(5, 512, 5, 513, 32, 2048, 3000) == (5, 600)  # then the columns that fit
    assert capacity(4, 512, 9, 512, 32, 2048, 4096) is None
    assert capacity(2, 2040, 2, 2049, 32, 2049, 10_000) == (2, 2049)  # never past the context limit


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path) -> Iterator[Any]:
    eng = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}}), EngineOptions(device="cpu"))
    eng.shutdown()  # its model and tokenizer serve the batchers built below
    assert eng.info.extra["batch_path"] == "packed"
    yield eng


def _batcher(tiny: Any, *, budget_tokens: int = 100_000, max_step_tokens: int = 512, model: Any = None,
             allocate: Callable[..., torch.Tensor] = torch.zeros) -> tuple[ContinuousBatcher, SlotCache]:
    shape = enable_packed(tiny.model, CPU)
    assert not isinstance(shape, str)
    cache = SlotCache(shape, budget_tokens, 8, allocate=allocate)
    eos = eos_token_ids(tiny.model, tiny.tokenizer)

    def make_core(requeue):  # type: ignore[no-untyped-def]
        return PackedCore(model or tiny.model, cache, eos, max_step_tokens, 2048, requeue)

    return ContinuousBatcher(make_core, lambda ids: tiny.tokenizer.decode(ids), CPU, 8), cache


class Collector:
    def __init__(self) -> None:
        self.events: list[TokenEvent] = []
        self.done = threading.Event()
        self.first = threading.Event()

    def __call__(self, ev: TokenEvent) -> None:
        self.events.append(ev)
        self.first.set()
        if ev.finish_reason:
            self.done.set()

    @property
    def text(self) -> str:
        assert self.done.wait(60)
        return "".join(e.text for e in self.events)


def _run(batcher: ContinuousBatcher, prompts: list[list[int]], params: SamplingParams = GREEDY) -> list[Collector]:
    out = []
    for p in prompts:
        c = Collector()
        batcher.submit(p, params, c)
        out.append(c)
    for c in out:
        assert c.done.wait(60)
    return out


def _prompts(tiny: Any) -> list[list[int]]:
    texts = ("Hello", "The quick brown fox jumps over the lazy dog. " * 3, "0 1 2 3 4 5 6 7 8 9 10")
    return [tiny.tokenize_text(t) for t in texts]


@pytest.fixture(scope="module")
def solo(tiny: Any) -> list[str]:
    batcher, _ = _batcher(tiny)
    try:
        return [_run(batcher, [p])[0].text for p in _prompts(tiny)]
    finally:
        batcher.shutdown()


def test_a_sequence_joining_a_running_batch_in_chunks_produces_what_it_produces_alone(tiny: Any, solo: list[str]) -> None:
    prompts = _prompts(tiny)
    assert len(prompts[1]) > 3 * 8  # its prompt takes several steps at 8 tokens a step
    batcher, _ = _batcher(tiny, max_step_tokens=8)
    try:
        first = Collector()
        batcher.submit(prompts[0], GREEDY, first)
        assert first.first.wait(60)  # the first one is decoding when the others join
        rest = _run(batcher, prompts[1:])
        assert [first.text] + [c.text for c in rest] == solo
        assert all(c.events[-1].finish_reason == "length" and c.events[-1].completion_tokens == 24 for c in rest)
    finally:
        batcher.shutdown()


def test_a_small_kv_budget_preempts_and_recomputes_without_changing_the_output(tiny: Any, solo: list[str]) -> None:
    prompts = _prompts(tiny)
    longest = max(len(p) for p in prompts) + GREEDY.max_tokens
    # room for every sequence's prompt, not for all three to finish together
    batcher, cache = _batcher(tiny, budget_tokens=2 * longest + 8)
    try:
        got = [c.text for c in _run(batcher, prompts)]
        assert got == solo
        stats = batcher.core.stats()
        assert stats.preemptions > 0
        assert stats.kv_cache_budget_bytes == (2 * longest + 8) * cache.shape.bytes_per_token
        assert cache.tokens <= 2 * longest + 8
    finally:
        batcher.shutdown()


def test_a_sequence_larger_than_the_kv_budget_fails_alone(tiny: Any, solo: list[str]) -> None:
    prompts = _prompts(tiny)
    batcher, _ = _batcher(tiny, budget_tokens=len(prompts[1]))
    try:
        big, small = _run(batcher, [prompts[1], prompts[0]])
        assert big.events[-1].finish_reason == "error" and "KV cache" in (big.events[-1].error or "")
        assert small.text[: len(solo[0]) // 2] == solo[0][: len(solo[0]) // 2]  # it runs until it too fills the cache
    finally:
        batcher.shutdown()


class OutOfMemoryOnLongSteps(torch.nn.Module):
    """A fake device that runs out of memory: the real model, except that a step of more than ``limit``
    tokens raises torch.OutOfMemoryError, as a CUDA allocation would."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model = model
        self.limit = limit

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        if input_ids.shape[1] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return self.model(input_ids=input_ids, **kwargs)


def test_out_of_memory_in_a_step_fails_one_sequence_not_the_batch(tiny: Any, solo: list[str]) -> None:
    prompts = _prompts(tiny)
    limit = len(prompts[0]) + 2
    batcher, _ = _batcher(tiny, model=OutOfMemoryOnLongSteps(tiny.model, limit))
    try:
        first = Collector()
        batcher.submit(prompts[0], GREEDY, first)
        assert first.first.wait(60)
        (big,) = _run(batcher, [prompts[1]])  # its prompt alone is past the limit
        assert big.events[-1].finish_reason == "error" and "out of memory" in (big.events[-1].error or "")
        assert first.text == solo[0]
    finally:
        batcher.shutdown()


def test_out_of_memory_growing_the_cache_fails_one_sequence(tiny: Any, solo: list[str]) -> None:
    prompts = _prompts(tiny)
    most = 2 * 64  # a fake allocator with room for two rows of 64 columns

    def allocate(size: tuple[int, ...], **kwargs: Any) -> torch.Tensor:
        if size[0] * size[2] > most:
            raise torch.OutOfMemoryError("CUDA out of memory (fake allocator)")
        return torch.zeros(size, **kwargs)

    batcher, _ = _batcher(tiny, allocate=allocate)
    try:
        a, b = _run(batcher, [prompts[0], prompts[2]])
        assert [a.text, b.text] == [solo[0], solo[2]]
        (big,) = _run(batcher, [prompts[1] * 2])  # needs more than 64 columns
        assert big.events[-1].finish_reason == "error" and "out of memory" in (big.events[-1].error or "")
        assert _run(batcher, [prompts[0]])[0].text == solo[0]  # and the batcher goes on
    finally:
        batcher.shutdown()


def test_cancelled_sequences_leave_and_free_their_slot(tiny: Any) -> None:
    batcher, _ = _batcher(tiny)
    try:
        long = SamplingParams(max_tokens=1500, ignore_eos=True)
        c = Collector()
        handle = batcher.submit(_prompts(tiny)[0], long, c)
        assert c.first.wait(60)
        handle.cancel()
        for _ in range(300):
            if batcher.running() == 0:
                break
            threading.Event().wait(0.01)
        assert batcher.running() == 0 and batcher.core.stats().kv_cache_tokens == 0
        assert all(e.finish_reason is None for e in c.events)
    finally:
        batcher.shutdown()


def test_an_empty_prompt_fails_alone_instead_of_waiting_forever(tiny: Any, solo: list[str]) -> None:
    batcher, _ = _batcher(tiny)
    try:
        empty, hello = _run(batcher, [[], _prompts(tiny)[0]])
        assert empty.events[-1].finish_reason == "error" and "empty" in (empty.events[-1].error or "")
        assert hello.text == solo[0]
    finally:
        batcher.shutdown()
