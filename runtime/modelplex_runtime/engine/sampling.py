"""Per-request token sampling over a batch of logits: greedy, temperature, top-k, top-p, seeded.

Sampling runs where the logits are (the GPU on CUDA): the only copy to the host is the chosen token ids,
one small list per step, never a row of logits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from modelplex_runtime.engine_api import SamplingParams


def make_generator(params: SamplingParams, offset: int = 0, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A generator for sequence ``offset`` of a request (its n sequences are seeded seed, seed + 1, ...),
    on the device its logits are sampled on."""
    if params.greedy:
        return None
    seed = params.seed + offset if params.seed is not None else random.getrandbits(63)
    return torch.Generator(device=device).manual_seed(seed % 2**64)


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token (a 0-d tensor on the logits' device) from a [vocab] logits row."""
    if params.greedy or generator is None:
        return torch.argmax(logits)
    scores = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop tokens once the mass before them already reaches top_p
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        # A top_p below float32's smallest value rounds to 0 and would drop every token (found by fuzzing).
        drop[0] = False
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """Tokens for a [batch, vocab] logits tensor, one set of parameters per row."""
    if all(p.greedy for p in params):
        return torch.argmax(logits, dim=-1).tolist()
    picks = [sample_row(logits[i], p, g) for i, (p, g) in enumerate(zip(params, generators, strict=True))]
    return torch.stack(picks).tolist()
