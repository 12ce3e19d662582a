"""The one place where a decode step's logits become tokens, sequence by sequence.

Sequences without per-sequence work take the batch sampler's fast path unchanged. Those with penalties,
logit_bias, min_tokens, a grammar or logprobs get their own row processed (``processors``), their raw
logprobs recorded (``logprobs``) and their grammar matcher advanced by the chosen token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modelplex_runtime.engine import processors
from modelplex_runtime.engine.grammar import mask_rows
from modelplex_runtime.engine.logprobs import TokenTexts, token_logprob
from modelplex_runtime.engine.sampling import sample_batch
from modelplex_runtime.engine_api import SamplingParams, TokenLogprob


@dataclass
class SeqState:
    """Per-sequence state of the processed path."""

    matcher: Any | None = None
    pending: list[TokenLogprob] = field(default_factory=list)  # logprobs not yet sent with an event
    error: str | None = None  # the sequence's grammar failed (it ends with this error; the batch goes on)

    def take_logprobs(self) -> list[TokenLogprob]:
        taken, self.pending = self.pending, []
        return taken


def new_state(params: SamplingParams) -> SeqState | None:
    if not params.processed:
        return None
    return SeqState(matcher=params.constraint.matcher() if params.constraint is not None else None)


class Steppable(Protocol):
    params: SamplingParams
    prompt_ids: list[int]
    out_ids: list[int]
    generator: torch.Generator | None
    state: SeqState | None


def choose_tokens(logits: torch.Tensor, seqs: Sequence[Steppable], eos_ids: set[int],
                  texts: TokenTexts | None) -> list[int]:
    """One token per sequence for a [batch, vocab] logits tensor."""
    params = [s.params for s in seqs]
    generators = [s.generator for s in seqs]
    if all(s.state is None for s in seqs):
        return sample_batch(logits, params, generators)
    rows = logits.float().cpu().clone()
    raw: dict[int, torch.Tensor] = {}
    constrained: list[tuple[int, Any]] = []
    for i, seq in enumerate(seqs):
        if seq.state is None:
            continue
        p = seq.params
        if p.logprobs is not None:
            raw[i] = torch.log_softmax(rows[i], dim=-1)
        if p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0 or p.logit_bias or p.min_tokens:
            processors.apply(rows[i], p, seq.prompt_ids, seq.out_ids, eos_ids)
        if seq.state.matcher is not None:
            constrained.append((i, seq.state.matcher))
    if constrained:
        mask_rows(rows, constrained)
    tokens = sample_batch(rows, params, generators)
    for i, (seq, tok) in enumerate(zip(seqs, tokens, strict=True)):
        state = seq.state
        if state is None:
            continue
        if i in raw and texts is not None:
            state.pending.append(token_logprob(raw[i], tok, seq.params.logprobs or 0, texts))
        if state.matcher is not None and tok not in eos_ids:
            try:
                state.matcher.advance(tok)
            except RuntimeError as exc:
                state.error = str(exc)
    return tokens


def grammar_done(state: SeqState | None) -> bool:
    return state is not None and state.matcher is not None and state.matcher.done
