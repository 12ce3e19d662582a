"""Per-request token sampling over a batch of logits: greedy, temperature, top-k, top-p, seeded."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from modelplex_runtime.engine_api import SamplingParams


def make_generator(params: SamplingParams, offset: int = 0) -> torch.Generator | None:
    """A generator for sequence ``offset`` of a request (its n sequences are seeded seed, seed + 1, ...)."""
    if params.greedy:
        return None
    seed = params.seed + offset if params.seed is not None else random.getrandbits(63)
    return torch.Generator(device="cpu").manual_seed(seed % 2**64)


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from a [vocab] float32 CPU logits row."""
    if params.greedy or generator is None:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
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
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """Tokens for a [batch, vocab] logits tensor, one set of parameters per row."""
    if all(p.greedy for p in params):
        return torch.argmax(logits, dim=-1).tolist()
    rows = logits.float().cpu()
    return [sample_row(rows[i], p, g) for i, (p, g) in enumerate(zip(params, generators, strict=True))]
