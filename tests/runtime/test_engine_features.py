"""The engine's per-sequence features in-process: logprobs against a direct forward pass, n sharing one
prefill, penalties, logit_bias, min_tokens, stop_token_ids, grammars, and constrained and free sequences
in one batch; each on both batch paths (packed and padded)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from modelplex_runtime import constraints
from modelplex_runtime.engine import processors
from modelplex_runtime.engine.loader import load_engine
from modelplex_runtime.engine_api import EngineOptions, SamplingParams, TokenEvent
from modelplex_spec import ModelEntry


@pytest.fixture(scope="module", params=["auto", "padded"])
def engine(tiny_llama_dir: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    eng = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}}),
                      EngineOptions(device="cpu", batch_path=request.param))
    assert eng.info.extra["batch_path"] == ("packed" if request.param == "auto" else "padded")
    yield eng
    eng.shutdown()
    torch.set_num_threads(threads)


def run(engine: Any, prompts: list[list[int]], params: SamplingParams) -> list[dict[int, list[TokenEvent]]]:
    """Each prompt's events by sequence index."""
    results: list[dict[int, list[TokenEvent]]] = [{} for _ in prompts]
    left = threading.Semaphore(0)

    def collector(i: int) -> Any:
        def on_event(ev: TokenEvent) -> None:
            results[i].setdefault(ev.index, []).append(ev)
            if ev.finish_reason:
                left.release()
        return on_event

    for i, p in enumerate(prompts):
        engine.generate(p, params, collector(i))
    for _ in range(len(prompts) * params.n):
        assert left.acquire(timeout=60)
    return results


def text(events: list[TokenEvent]) -> str:
    return "".join(e.text for e in events)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir: Path) -> Any:
    """The same weights in a model of their own, with transformers' own attention (the engine's model is
    switched to the packed attention on the packed path)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()


def test_logprobs_agree_with_a_direct_forward_pass(engine: Any, reference: Any) -> None:
    prompt = engine.tokenize_text("The quick brown fox")
    events = run(engine, [prompt], SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=3))[0][0]
    logprobs = [lp for e in events for lp in (e.logprobs or [])]
    assert len(logprobs) == 6
    ids = list(prompt)
    with torch.inference_mode():
        for lp in logprobs:
            row = torch.log_softmax(reference(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            token = int(torch.argmax(row))
            assert engine.tokenizer.decode([token], skip_special_tokens=False) == lp.token
            assert lp.logprob == pytest.approx(float(row[token]), abs=1e-4)
            top = torch.topk(row, 3)
            assert [a[1] for a in lp.top] == pytest.approx(top.values.tolist(), abs=1e-4)
            assert lp.top[0][0] == lp.token  # greedy: the chosen token is the most likely
            ids.append(token)


def test_n_sequences_share_one_prefill_and_sample_apart(engine: Any) -> None:
    fed: list[int] = []
    core = engine._batcher.core
    model = core.model

    class Counting(torch.nn.Module):
        def forward(self, **kw: Any) -> Any:
            fed.append(kw["input_ids"].numel())
            return model(**kw)

    prompt = engine.tokenize_text("The quick brown fox")
    core.model = Counting()
    try:
        out = run(engine, [prompt], SamplingParams(max_tokens=8, temperature=1.0, seed=3, n=3, ignore_eos=True))[0]
    finally:
        core.model = model
    # the prompt once, then a token per sequence for each of the 7 tokens after the first (both paths)
    assert sum(fed) == len(prompt) + 3 * 7
    assert sorted(out) == [0, 1, 2]
    assert len({text(evs) for evs in out.values()}) > 1  # seeded seed, seed + 1, seed + 2
    again = run(engine, [engine.tokenize_text("The quick brown fox")], SamplingParams(max_tokens=8, temperature=1.0, seed=3, n=3,
                                                                         ignore_eos=True))[0]
    assert {i: text(e) for i, e in again.items()} == {i: text(e) for i, e in out.items()}


def test_processors_follow_openai_and_vllm_semantics() -> None:
    row = torch.tensor([2.0, -2.0, 1.0, 0.5])
    processors.apply(row, SamplingParams(max_tokens=4, repetition_penalty=2.0), [0], [1], set())
    assert row.tolist() == [1.0, -4.0, 1.0, 0.5]
    row = torch.zeros(4)
    processors.apply(row, SamplingParams(max_tokens=4, presence_penalty=0.5, frequency_penalty=0.25), [3], [1, 1, 2],
                     set())
    assert row.tolist() == [0.0, -1.0, -0.75, 0.0]  # generated tokens only: token 3 (prompt) untouched
    row = torch.zeros(4)
    processors.apply(row, SamplingParams(max_tokens=4, logit_bias=((2, 5.0),), min_tokens=2, stop_token_ids=(3,)),
                     [], [1], {0})
    assert row.tolist() == [float("-inf"), 0.0, 5.0, float("-inf")]


def test_logit_bias_min_tokens_and_stop_token_ids(engine: Any) -> None:
    prompt = engine.tokenize_text("Hello")
    forced = engine.tokenize_text(" fox", add_special_tokens=False)[0]
    biased = run(engine, [prompt], SamplingParams(max_tokens=4, temperature=0, logit_bias=((forced, 100.0),),
                                                  ignore_eos=True))[0][0]
    assert text(biased) == engine.tokenizer.decode([forced] * 4)
    eos = engine.tokenizer.eos_token_id
    ended = run(engine, [prompt], SamplingParams(max_tokens=20, temperature=0, logit_bias=((eos, 100.0),),
                                                 min_tokens=3))[0][0]
    assert ended[-1].finish_reason == "stop" and ended[-1].completion_tokens == 3  # EOS held off for 3 tokens
    stopped = run(engine, [prompt], SamplingParams(max_tokens=20, temperature=0, logit_bias=((forced, 100.0),),
                                                   stop_token_ids=(forced,), ignore_eos=True))[0][0]
    assert stopped[-1].finish_reason == "stop" and stopped[-1].completion_tokens == 0 and text(stopped) == ""


def test_constrained_and_free_sequences_share_a_batch(engine: Any) -> None:
    schema = {"type": "object", "properties": {"k": {"type": "string", "maxLength": 6}, "v": {"type": "boolean"}},
              "required": ["k", "v"], "additionalProperties": False}
    compiled = engine.compile_constraint(constraints.json_schema(schema))
    assert engine.compile_constraint(constraints.json_schema(schema)) is compiled  # cached
    prompt = engine.tokenize_text("Hello")
    steps: list[int] = []
    engine._batcher.core.on_step = steps.append
    try:
        free = SamplingParams(max_tokens=40, temperature=1.0, seed=1, ignore_eos=True)
        tight = SamplingParams(max_tokens=80, temperature=1.0, seed=1, constraint=compiled, n=4)
        results: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda k=k, p=p: results.__setitem__(k, run(engine, [prompt], p)))
                   for k, p in (("free", free), ("tight", tight))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine._batcher.core.on_step = None
    assert max(steps) > 1
    for evs in results["tight"][0].values():
        value = json.loads(text(evs))
        assert set(value) == {"k", "v"} and evs[-1].finish_reason == "stop"
    assert results["free"][0][0][-1].completion_tokens == 40


def test_an_unsupported_schema_is_refused_by_name(engine: Any) -> None:
    from modelplex_runtime.engine_api import ConstraintError

    with pytest.raises(ConstraintError, match="format"):
        engine.compile_constraint(constraints.json_schema({"type": "string", "format": "no-such-format"}, "bad"))


def test_a_failing_grammar_ends_its_sequence_only(engine: Any) -> None:
    compiled = engine.compile_constraint(constraints.json_schema({"type": "object"}))
    prompt = engine.tokenize_text("Hello")
    broken = SamplingParams(max_tokens=20, temperature=0, constraint=compiled)
    free = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    original = type(compiled.matcher())

    class Refusing(original):  # type: ignore[misc, valid-type]
        def advance(self, token: int) -> None:
            raise RuntimeError(f"the grammar refused token {token}: simulated")

    make = compiled.matcher
    compiled.matcher = lambda: Refusing(make()._m, compiled.vocab_size)  # type: ignore[method-assign]
    try:
        out: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda k=k, p=p: out.__setitem__(k, run(engine, [prompt], p)))
                   for k, p in (("broken", broken), ("free", free))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        compiled.matcher = make  # type: ignore[method-assign]
    last = out["broken"][0][0][-1]
    assert last.finish_reason == "error" and "simulated" in (last.error or "")
    assert out["free"][0][0][-1].completion_tokens == 12  # the batch went on
