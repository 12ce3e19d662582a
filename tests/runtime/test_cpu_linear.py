"""Linear layers on oneDNN: the same logits for one token and for many, and only weights that nothing else
shares get a oneDNN copy."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from modelplex_runtime.engine import cpu_linear


def test_onednn_linears_give_the_same_logits(tiny_llama_dir: Path) -> None:
    assert cpu_linear.available()  # the pinned CPU torch ships oneDNN
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    many, one = torch.tensor([[1, 5, 9, 13, 17, 21]]), torch.tensor([[7]])
    with torch.inference_mode():
        before = model(input_ids=many).logits, model(input_ids=one).logits
        linears = sum(type(m) is torch.nn.Linear for m in model.modules())
        assert cpu_linear.use_onednn_linears(model) == linears
        after = model(input_ids=many).logits, model(input_ids=one).logits
    assert sum(isinstance(m, cpu_linear.OneDNNLinear) for m in model.modules()) == linears
    for b, a in zip(before, after, strict=True):
        assert torch.allclose(b, a, atol=1e-4, rtol=1e-4)
    assert set(model.state_dict()) == set(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict())


def test_bf16_linears_run_on_onednn_where_the_cpu_runs_bf16(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16).eval()
    many, one = torch.tensor([[1, 5, 9, 13, 17, 21]]), torch.tensor([[7]])
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    with torch.inference_mode():
        before = model(input_ids=many).logits, model(input_ids=one).logits
        replaced = cpu_linear.use_onednn_linears(model)
        after = model(input_ids=many).logits, model(input_ids=one).logits
    if torch.bfloat16 not in cpu_linear.reorderable_dtypes():  # this CPU's oneDNN has no native bf16
        assert replaced == 0
        return
    assert replaced == linears
    layer = next(m for m in model.modules() if isinstance(m, cpu_linear.OneDNNLinear))
    assert layer.min_rows == 1 and layer.packed.dtype == torch.bfloat16
    for b, a in zip(before, after, strict=True):
        assert torch.allclose(b.float(), a.float(), atol=2e-2, rtol=2e-2)


def test_a_tied_lm_head_keeps_the_embedding_weight(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.lm_head.weight = model.get_input_embeddings().weight  # tie them
    cpu_linear.use_onednn_linears(model)
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_the_engine_uses_them_unless_told_not_to(tiny_llama_dir: Path) -> None:
    from modelplex_runtime.engine.loader import load_engine
    from modelplex_runtime.engine_api import EngineOptions
    from modelplex_spec import ModelEntry

    entry = ModelEntry.model_validate({"Plain": {"model_id": str(tiny_llama_dir)}})
    threads = torch.get_num_threads()
    for option, expect_onednn in (("onednn", True), ("torch", False)):
        engine = load_engine(entry, EngineOptions(device="cpu", cpu_linear=option))
        try:
            layers = sum(isinstance(m, cpu_linear.OneDNNLinear) for m in engine.model.modules())
            assert (layers > 0) is expect_onednn
            assert engine.info.extra.get("onednn_linears", 0) == layers
            assert engine.info.extra["batch_path"] == "packed"  # the load-time check passes with them too
        finally:
            engine.shutdown()
    torch.set_num_threads(threads)
