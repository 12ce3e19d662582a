"""The engine in-process: batched decoding matches solo decoding, sampling, quantization, pooling."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from modelplex_runtime.engine.loader import load_engine
from modelplex_runtime.engine.quantize import QuantizationError, check_supported, param_bytes, quantize_model
from modelplex_runtime.engine.sampling import make_generator, sample_row
from modelplex_runtime.engine.tiny import make_tiny_llama
from modelplex_runtime.engine_api import EngineOptions, SamplingParams, TokenEvent
from modelplex_spec import ModelEntry, QuantScheme


def _generate(engine, prompts: list[list[int]], params: SamplingParams) -> list[list[TokenEvent]]:  # type: ignore[no-untyped-def]
    results: list[list[TokenEvent]] = [[] for _ in prompts]
    done = threading.Semaphore(0)

    def collector(i: int):  # type: ignore[no-untyped-def]
        def on_event(ev: TokenEvent) -> None:
            results[i].append(ev)
            if ev.finish_reason:
                done.release()
        return on_event

    for i, p in enumerate(prompts):
        engine.generate(p, params, collector(i))
    for _ in prompts:
        assert done.acquire(timeout=60)
    return results


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()  # the batcher tunes torch's process-wide thread count
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["auto", "padded"])
def engine(tiny_llama_dir: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The tiny model on each batch path: packed (what "auto" picks for it) and padded."""
    eng = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}}),
                      EngineOptions(device="cpu", batch_path=request.param))
    assert eng.info.extra["batch_path"] == ("packed" if request.param == "auto" else "padded")
    yield eng
    eng.shutdown()


def test_batched_greedy_matches_solo(engine) -> None:  # type: ignore[no-untyped-def]
    prompts = [engine.tokenize_text(t) for t in ("Hello", "The quick brown fox jumps", "0 1 2 3 4 5 6 7 8 9 10")]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    solo = ["".join(e.text for e in _generate(engine, [p], params)[0]) for p in prompts]
    batched = ["".join(e.text for e in evs) for evs in _generate(engine, prompts, params)]
    assert batched == solo
    last = _generate(engine, prompts[:1], params)[0][-1]
    assert last.finish_reason == "length" and last.completion_tokens == 12


def test_stop_strings_cut_the_text_on_both_paths(engine) -> None:  # type: ignore[no-untyped-def]
    prompt = engine.tokenize_text("Hello")
    full = "".join(e.text for e in _generate(engine, [prompt], SamplingParams(max_tokens=30, temperature=0,
                                                                           ignore_eos=True))[0])
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip()
    events = _generate(engine, [prompt, prompt], SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                                                stop=(stop,)))
    for evs in events:
        assert evs[-1].finish_reason == "stop"
        assert "".join(e.text for e in evs) == full[: full.index(stop)]


def test_cancel_stops_a_sequence(engine) -> None:  # type: ignore[no-untyped-def]
    events: list[TokenEvent] = []
    first = threading.Event()

    def on_event(ev: TokenEvent) -> None:
        events.append(ev)
        first.set()

    handle = engine.generate(engine.tokenize_text("Hi"), SamplingParams(max_tokens=1500, ignore_eos=True), on_event)
    assert first.wait(30)
    handle.cancel()
    for _ in range(300):
        if engine.running() == 0:
            break
        threading.Event().wait(0.01)
    assert engine.running() == 0
    assert all(ev.finish_reason is None for ev in events)


def test_sampling_rules() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    greedy = SamplingParams(max_tokens=1, temperature=0)
    assert int(sample_row(logits, greedy, make_generator(greedy))) == 1
    topk1 = SamplingParams(max_tokens=1, temperature=1.0, top_k=1)
    assert topk1.greedy
    narrow = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.01, seed=1)
    assert {int(sample_row(logits, narrow, make_generator(narrow))) for _ in range(20)} == {1}
    seeded = SamplingParams(max_tokens=1, temperature=1.5, seed=5)
    a = [int(sample_row(logits, seeded, g)) for g in [make_generator(seeded)] for _ in range(10)]
    b = [int(sample_row(logits, seeded, g)) for g in [make_generator(seeded)] for _ in range(10)]
    assert a == b
    top2 = SamplingParams(max_tokens=1, temperature=2.0, top_k=2, seed=3)
    gen = make_generator(top2)
    assert {int(sample_row(logits, top2, gen)) for _ in range(50)} <= {1, 3}


def test_int8_weight_only_quantization_saves_memory(tmp_path: Path) -> None:
    model_dir = make_tiny_llama(tmp_path / "m", hidden_size=256, num_layers=2)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([[1, 5, 9, 20]])
    before_logits = model(ids).logits
    before = param_bytes(model)
    quantize_model(model, QuantScheme.INT8_WEIGHT_ONLY, torch.device("cpu"))
    after = param_bytes(model)
    after_logits = model(ids).logits
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head)
    assert before - after >= linear * 3 * 0.95  # f32 -> int8 saves ~3 bytes per quantized weight
    assert torch.nn.functional.cosine_similarity(before_logits.flatten(), after_logits.flatten(), dim=0) > 0.99


def test_schemes_without_a_cpu_kernel_are_refused() -> None:
    with pytest.raises(QuantizationError, match="FP8"):
        check_supported(QuantScheme.FP8_WEIGHT_ONLY, torch.device("cpu"))
    with pytest.raises(QuantizationError, match="Q8_0"):
        check_supported(QuantScheme.INT4_WEIGHT_ONLY, torch.device("cpu"))
    entry = ModelEntry.model_validate({"Plain": {"model_id": "/nonexistent"}, "in_situ_quant": "Q4K"})
    with pytest.raises(QuantizationError):
        load_engine(entry, EngineOptions(device="cpu"))


def test_quantized_engine_generates(tiny_llama_dir: Path) -> None:
    entry = ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}, "in_situ_quant": "Q8_0"})
    eng = load_engine(entry, EngineOptions(device="cpu"))
    try:
        assert eng.info.quantization == "Q8_0->int8_weight_only"
        evs = _generate(eng, [eng.tokenize_text("Hello")], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))[0]
        assert evs[-1].completion_tokens == 5
    finally:
        eng.shutdown()


def test_chat_template_override(tiny_llama_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    entry = ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}, "jinja_explicit": str(template)})
    eng = load_engine(entry, EngineOptions(device="cpu"))
    try:
        assert eng.render_chat([{"role": "user", "content": "hi"}]) == "[user]hi"  # type: ignore[attr-defined]
    finally:
        eng.shutdown()
    literal = ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}, "chat_template": "{{ messages[0]['content'] }}!"})
    eng = load_engine(literal, EngineOptions(device="cpu"))
    try:
        assert eng.render_chat([{"role": "user", "content": "yo"}]) == "yo!"  # type: ignore[attr-defined]
    finally:
        eng.shutdown()


def test_gguf_entry_loads_the_same_model(engine, tiny_llama_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from modelplex_runtime.engine.tiny import make_tiny_gguf

    make_tiny_gguf(tiny_llama_dir, tmp_path / "tiny-f32.gguf")
    entry = ModelEntry.model_validate({"GGUF": {"quantized_model_id": str(tmp_path), "quantized_filename": "tiny-f32.gguf",
                                                "tok_model_id": str(tiny_llama_dir)}, "alias": "g"})
    gguf_engine = load_engine(entry, EngineOptions(device="cpu"))
    try:
        assert gguf_engine.info.kind == "GGUF" and gguf_engine.info.max_model_len == 2048
        prompt = engine.tokenize_text("The quick brown fox")
        params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
        from_gguf = "".join(e.text for e in _generate(gguf_engine, [prompt], params)[0])
        from_hf = "".join(e.text for e in _generate(engine, [prompt], params)[0])
        assert from_gguf == from_hf
    finally:
        gguf_engine.shutdown()


def test_a_burst_from_idle_is_prefilled_as_one_batch(tiny_llama_dir: Path) -> None:
    from modelplex_runtime.engine.batcher import ContinuousBatcher
    from modelplex_runtime.engine.text_engine import batch_path

    eng = load_engine(ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}}), EngineOptions(device="cpu"))
    eng.shutdown()  # its model and tokenizer, in a batcher of the test's own
    steps: list[int] = []
    make_core, _ = batch_path(eng.model, eng.tokenizer, eng.info, torch.device("cpu"),
                              EngineOptions(device="cpu", max_batch_size=8, on_step=steps.append))
    tokenizer = eng.tokenizer
    # Windows far longer than the gaps between submissions, so the test does not depend on scheduling.
    batcher = ContinuousBatcher(make_core, lambda ids: tokenizer.decode(ids), torch.device("cpu"), 8,
                                gather_quiet_seconds=0.5, gather_max_seconds=5.0)
    try:
        done = threading.Semaphore(0)
        params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)

        def on_event(ev: TokenEvent) -> None:
            if ev.finish_reason:
                done.release()

        for text in ("Hello", "The quick brown fox", "0 1 2", "Kubernetes"):
            batcher.submit(tokenizer(text)["input_ids"], params, on_event)
            threading.Event().wait(0.02)
        for _ in range(4):
            assert done.acquire(timeout=60)
        assert steps[0] == 4  # all four joined before the first step, not one by one
        # A lone request is not held past the quiet window.
        batcher.submit(tokenizer("Hi")["input_ids"], params, on_event)
        assert done.acquire(timeout=60)
    finally:
        batcher.shutdown()
