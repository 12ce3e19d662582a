"""Attention for a packed step: the new tokens of every sequence in one row, each attending to its own
KV cache slot.

A step packs the batch's new tokens into one sequence of T tokens with no padding: first one token per
decoding sequence, then the prompt chunks being prefilled. The model runs its layers as usual (one
matmul per weight for all T tokens); transformers calls ``packed_attention`` (registered as
``ATTENTION_NAME``) with the post-RoPE keys and values of the T tokens. It writes them into the slot
cache, then computes
- the decoding tokens together: one attention over their slots, masked to each one's length;
- each prefill chunk on its own: causal SDPA, with no mask unless the chunk continues an earlier one.
Where each token goes and the masks are worked out once per step (``StepLayout``) for every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from modelplex_runtime.engine.kv_slots import SlotCache

ATTENTION_NAME = "modelplex_packed"
LAYOUT_KWARG = "modelplex_layout"


class Unsupported(Exception):
    """The model's attention needs something this function does not do (the padded path serves it)."""


@dataclass(frozen=True)
class Chunk:
    start: int  # index of its first token in the step
    length: int
    slot: int
    past: int  # tokens of this sequence already in its slot


class StepLayout:
    def __init__(self, cache: SlotCache, decode_slots: list[int], decode_lengths: list[int], chunks: list[Chunk]) -> None:
        device = cache.shape.device
        self.cache = cache
        self.chunks = chunks
        self.decode_rows = len(decode_slots)
        token_slots = list(decode_slots)
        token_columns = [n - 1 for n in decode_lengths]
        for c in chunks:
            token_slots += [c.slot] * c.length
            token_columns += range(c.past, c.past + c.length)
        self.tokens = len(token_slots)
        self.token_slots = torch.tensor(token_slots, dtype=torch.long, device=device)
        self.token_columns = torch.tensor(token_columns, dtype=torch.long, device=device)
        self.positions = self.token_columns.unsqueeze(0)
        # Decode attention runs over slots [0, span); when the decoding sequences hold exactly those slots,
        # in order, their queries are used as they are (the usual case), else scattered into place.
        self.identity = decode_slots == list(range(self.decode_rows))
        self.span = self.decode_rows if self.identity else (max(decode_slots) + 1 if decode_slots else 0)
        self.width = max(decode_lengths, default=0)
        self.decode_index = torch.tensor(decode_slots, dtype=torch.long, device=device)
        lengths = torch.ones(self.span, dtype=torch.long)  # rows of other slots see column 0 (their output is dropped)
        lengths[torch.tensor(decode_slots, dtype=torch.long)] = torch.tensor(decode_lengths, dtype=torch.long)
        self._decode_lengths = lengths.to(device)
        self._masks: dict[Any, torch.Tensor | None] = {}

    def decode_allowed(self, window: int | None) -> torch.Tensor:
        """SDPA's boolean mask [span, 1, 1, width] for the decoding tokens (True = attend): each slot's own
        columns, within the sliding window when there is one."""
        key = ("decode", window)
        if key not in self._masks:
            cols = torch.arange(self.width, device=self._decode_lengths.device)
            lengths = self._decode_lengths[:, None]
            allowed = cols[None, :] < lengths
            if window is not None:
                allowed &= cols[None, :] > lengths - 1 - window
            self._masks[key] = allowed[:, None, None, :]
        mask = self._masks[key]
        assert mask is not None
        return mask

    def chunk_allowed(self, index: int, window: int | None) -> torch.Tensor | None:
        """SDPA's boolean mask [length, past + length] for chunk ``index`` (True = attend); None when plain
        causal attention over the chunk alone is right (a first chunk shorter than the window)."""
        c = self.chunks[index]
        if c.past == 0 and (window is None or c.length <= window):
            return None
        key = ("chunk", index, window)
        if key not in self._masks:
            device = self.token_columns.device
            rows = torch.arange(c.past, c.past + c.length, device=device)[:, None]
            cols = torch.arange(c.past + c.length, device=device)[None, :]
            allowed = cols <= rows
            if window is not None:
                allowed &= cols > rows - window
            self._masks[key] = allowed
        return self._masks[key]


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, T, head_dim]
    key: torch.Tensor,  # [1, kv_heads, T, head_dim]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    layout: StepLayout | None = kwargs.get(LAYOUT_KWARG)
    if layout is None:
        raise Unsupported("the packed attention was called outside a packed step")
    if softcap or getattr(module, "sinks", None) is not None:
        raise Unsupported("attention logit soft-capping and attention sinks are not implemented")
    layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise Unsupported("the attention module does not say which layer it is")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    k_cache, v_cache = layout.cache.layer(layer)
    # one in-place write of the step's keys and values into their slots and columns
    k_cache.permute(0, 2, 1, 3).index_put_((layout.token_slots, layout.token_columns), key[0].transpose(0, 1))
    v_cache.permute(0, 2, 1, 3).index_put_((layout.token_slots, layout.token_columns), value[0].transpose(0, 1))
    out = query.new_empty(layout.tokens, query.shape[1], query.shape[3])
    if layout.decode_rows:
        out[: layout.decode_rows] = _decode(layout, query, k_cache, v_cache, scale, sliding_window)
    gqa = query.shape[1] != key.shape[1]
    for i, c in enumerate(layout.chunks):
        q = query[:, :, c.start : c.start + c.length]
        allowed = layout.chunk_allowed(i, sliding_window)
        if allowed is None:
            k, v = key[:, :, c.start : c.start + c.length], value[:, :, c.start : c.start + c.length]
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        else:
            end = c.past + c.length
            k, v = k_cache[c.slot : c.slot + 1, :, :end], v_cache[c.slot : c.slot + 1, :, :end]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=gqa)
        out[c.start : c.start + c.length] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def _decode(layout: StepLayout, query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float,
            window: int | None) -> torch.Tensor:
    """Attention of the step's decoding tokens, [decode_rows, heads, head_dim]: one query per slot, so the
    grouped heads of a slot are the query rows of that slot's attention over its own keys."""
    rows, heads, dim = layout.decode_rows, query.shape[1], query.shape[3]
    kv_heads = k_cache.shape[1]
    q = query[0, :, :rows].transpose(0, 1)  # [rows, heads, dim]
    if not layout.identity:
        q = q.new_zeros(layout.span, heads, dim).index_copy_(0, layout.decode_index, q)
    q = q.reshape(layout.span, kv_heads, heads // kv_heads, dim)
    k = k_cache[: layout.span, :, : layout.width]  # a strided view of the slots in use
    v = v_cache[: layout.span, :, : layout.width]
    allowed = layout.decode_allowed(window)
    out = _slots_sdpa(q, k, v, allowed, scale) if fused_decode(q.dtype) else _slots_matmul(q, k, v, allowed, scale)
    out = out.reshape(layout.span, heads, dim)
    return out if layout.identity else out.index_select(0, layout.decode_index)


def fused_decode(dtype: torch.dtype) -> bool:
    """Whether decode attention runs as one SDPA call (reduced precision) or as two matmuls (float32).

    Measured on an AMX Xeon with ``python -m benchmarks.decode_attention`` (docs/benchmarks.md, "Decode
    attention over the slot cache"): in bf16 the two matmuls copy every slot's keys and values and run a slow
    small-matrix bf16 ``bmm``, 40 ms a layer for 32 sequences of 300 tokens against 4.5 ms for SDPA reading
    the cache in place (a hidden-2048 decode step at 16/32/64 sequences: 2.0x/2.5x/3.3x faster with SDPA);
    in float32 the matmuls' step was level or up to 9% faster."""
    return dtype != torch.float32


def _slots_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


def _slots_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float) -> torch.Tensor:
    scores = torch.matmul(q * scale, k.transpose(-1, -2))  # [span, kv_heads, group, width]
    scores.masked_fill_(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v)
