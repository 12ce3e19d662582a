"""Per-sequence logits processors: repetition, presence and frequency penalties, logit_bias and
min_tokens, applied in that order to one sequence's row of a step's logits (in place); a grammar's mask
follows (``grammar.mask_rows``, for every constrained row of the step at once).

Semantics follow OpenAI and vLLM: presence/frequency penalties count the generated tokens only;
repetition_penalty (HF/vLLM) covers prompt and generated tokens, dividing positive logits and multiplying
negative ones; min_tokens keeps EOS and ``stop_token_ids`` out until that many tokens were generated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modelplex_runtime.engine_api import SamplingParams


def apply(row: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int], out_ids: Sequence[int],
          eos_ids: set[int]) -> None:
    vocab = row.shape[-1]
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({t for t in (*prompt_ids, *out_ids) if 0 <= t < vocab}), dtype=torch.long)
        if seen.numel():
            values = row[seen]
            row[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and out_ids:
        counts = torch.bincount(torch.tensor(out_ids, dtype=torch.long), minlength=vocab)[:vocab].to(row.dtype)
        row -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(row.dtype)
    for token, bias in params.logit_bias:
        row[token] += bias
    if len(out_ids) < params.min_tokens:
        ends = [t for t in (*eos_ids, *params.stop_token_ids) if 0 <= t < vocab]
        if ends:
            row[ends] = float("-inf")
