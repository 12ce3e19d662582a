"""Whether a loaded causal LM can run on the packed batch path, and switching it over.

The packed path needs the model's attention to go through transformers' attention interface (so that
``packed_attention`` can be plugged in) with one KV shape for every layer. Rather than trust a list of
architectures, ``enable_packed`` checks: it computes a short sequence in three packed steps (a first
chunk, a decode token, a continuing chunk) and compares the last logits with the model's own forward.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AttentionInterface

from modelplex_runtime.engine.kv_slots import KVShape, SlotCache
from modelplex_runtime.engine.packed_attention import (
    ATTENTION_NAME,
    LAYOUT_KWARG,
    Chunk,
    StepLayout,
    packed_attention,
)

log = logging.getLogger("modelplex_runtime.engine")

AttentionInterface.register(ATTENTION_NAME, packed_attention)


def kv_shape(model: torch.nn.Module, device: torch.device) -> KVShape:
    config: Any = getattr(model.config, "text_config", None) or model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    dtype = next(model.parameters()).dtype
    return KVShape(int(config.num_hidden_layers), kv_heads, head_dim, dtype, device)


def enable_packed(model: torch.nn.Module, device: torch.device) -> KVShape | str:
    """Switch ``model`` to packed attention and return its KV shape, or say why it cannot run packed
    (the model is then left as it was)."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous == ATTENTION_NAME:  # switched before (a second batcher on the same model): compare with SDPA
        model.set_attn_implementation("sdpa")
        previous = "sdpa"
    try:
        shape = kv_shape(model, device)
        vocab = int(model.get_input_embeddings().num_embeddings)
        ids = [(7 * i + 3) % vocab for i in range(6)]
        with torch.inference_mode():
            reference = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
            model.set_attn_implementation(ATTENTION_NAME)
            got = _packed_logits(model, shape, ids).float()
        error = (got - reference).abs().max().item()
        tolerance = 1e-3 if shape.dtype == torch.float32 else 5e-2
        if not error <= tolerance * max(1.0, reference.abs().max().item()):
            raise ValueError(f"packed logits differ from the model's own by {error:.3g}")
        return shape
    except Exception as exc:  # any failure means: serve this model on the padded path
        if previous is not None:
            model.set_attn_implementation(previous)
        return f"{type(exc).__name__}: {exc}"


def _packed_logits(model: torch.nn.Module, shape: KVShape, ids: list[int]) -> torch.Tensor:
    """The logits after ``ids``, fed in three packed steps into slot 1 of a two-slot cache (so that the
    decode step also takes the path for a batch whose slots are not 0..n-1)."""
    cache = SlotCache(shape, budget_tokens=128, max_slots=2)
    cache.rebuild([], 2, 64)
    logits = torch.empty(0)
    for layout, tokens in (
        (StepLayout(cache, [], [], [Chunk(0, 3, 1, 0)]), ids[:3]),
        (StepLayout(cache, [1], [4], []), ids[3:4]),
        (StepLayout(cache, [], [], [Chunk(0, 2, 1, 4)]), ids[4:]),
    ):
        out = model(input_ids=torch.tensor([tokens], device=shape.device), position_ids=layout.positions,
                    use_cache=False, logits_to_keep=1, **{LAYOUT_KWARG: layout})
        logits = out.logits[0, -1]
    return logits
