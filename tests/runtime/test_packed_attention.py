"""The packed step's attention against attention written out per token: decoding tokens over their own
cache slots (grouped heads, a sliding window, slots out of order, in f32 and bf16) and a prompt chunk that
continues an earlier one, all in one step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modelplex_runtime.engine.kv_slots import KVShape, SlotCache
from modelplex_runtime.engine.packed_attention import LAYOUT_KWARG, Chunk, StepLayout, packed_attention

HEAD_DIM = 16


def _reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """One token's attention, [heads, dim], over ``keys``/``values`` [kv_heads, n, dim], in float64."""
    group = q.shape[0] // keys.shape[0]
    k = keys.double().repeat_interleave(group, 0)
    v = values.double().repeat_interleave(group, 0)
    probs = torch.softmax((q.double()[:, None, :] @ k.transpose(1, 2))[:, 0] * scale, dim=-1)
    return (probs[:, None, :] @ v)[:, 0]


@pytest.mark.parametrize(("dtype", "heads", "kv_heads", "window", "atol"), [
    (torch.float32, 4, 4, None, 1e-5),
    (torch.float32, 4, 2, 5, 1e-5),
    (torch.bfloat16, 8, 2, None, 3e-2),
])
def test_a_packed_step_attends_as_each_token_would_alone(dtype: torch.dtype, heads: int, kv_heads: int,
                                                         window: int | None, atol: float) -> None:
    torch.manual_seed(0)
    cache = SlotCache(KVShape(1, kv_heads, HEAD_DIM, dtype, torch.device("cpu")), 10_000, 8)
    cache.rebuild([], 5, 64)
    k_cache, v_cache = cache.layer(0)
    k_cache.normal_()
    v_cache.normal_()
    # decoding: slot 3 at length 9, slot 0 at length 20, slot 1 at length 1 (out of order: not the identity);
    # then a chunk of 6 prompt tokens continuing slot 4 after 7 cached ones
    decode_slots, decode_lengths = [3, 0, 1], [9, 20, 1]
    chunk = Chunk(start=3, length=6, slot=4, past=7)
    layout = StepLayout(cache, decode_slots, decode_lengths, [chunk])
    tokens = layout.tokens
    query = torch.randn(1, heads, tokens, HEAD_DIM, dtype=dtype)
    key = torch.randn(1, kv_heads, tokens, HEAD_DIM, dtype=dtype)
    value = torch.randn(1, kv_heads, tokens, HEAD_DIM, dtype=dtype)
    scale = HEAD_DIM ** -0.5
    out, _ = packed_attention(SimpleNamespace(layer_idx=0), query, key, value, None, scaling=scale,
                              sliding_window=window, **{LAYOUT_KWARG: layout})
    assert out.shape == (1, tokens, heads, HEAD_DIM)
    # the step's keys and values were written into their slots and columns
    for t, (slot, column) in enumerate(zip(layout.token_slots.tolist(), layout.token_columns.tolist(), strict=True)):
        assert torch.equal(k_cache[slot, :, column], key[0, :, t])
        assert torch.equal(v_cache[slot, :, column], value[0, :, t])
    wanted = [(slot, n) for slot, n in zip(decode_slots, decode_lengths, strict=True)]
    wanted += [(chunk.slot, chunk.past + i + 1) for i in range(chunk.length)]
    for t, (slot, n) in enumerate(wanted):
        first = 0 if window is None else max(0, n - window)
        expected = _reference(query[0, :, t], k_cache[slot, :, first:n], v_cache[slot, :, first:n], scale)
        torch.testing.assert_close(out[0, t].double(), expected, atol=atol, rtol=atol)
