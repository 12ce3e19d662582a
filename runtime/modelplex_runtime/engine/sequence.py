"""One generation request's sequence inside the batcher, and what happens to a sampled token.

Both batch paths (packed and padded) keep their sequences as ``Generation`` objects, choose tokens for
them with ``step.choose_tokens`` and hand each token to ``accept``, which applies EOS, ``stop_token_ids``,
stop strings, a finished grammar and the token limit, and reports text (and logprobs) through the
request's callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from modelplex_runtime.engine.logprobs import TokenTexts
from modelplex_runtime.engine.step import SeqState, choose_tokens, grammar_done
from modelplex_runtime.engine_api import SamplingParams, TokenEvent
from modelplex_runtime.textstream import TextStream


@dataclass(eq=False)
class Generation:
    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[TokenEvent], None]
    text: TextStream
    generator: torch.Generator | None = None
    out_ids: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    index: int = 0  # which of its request's n sequences
    state: SeqState | None = None  # per-sequence logits work (penalties, grammar, logprobs); None: none
    group: object | None = None  # the request's n sequences share one prefill
    # where it is in the packed batch path: its KV cache row, how many of its tokens that row holds, and
    # the sibling whose prefill it waits to copy (a request's n sequences prefill once)
    slot: int = -1
    cached: int = 0
    leader: Generation | None = None

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def length(self) -> int:
        """Prompt plus generated tokens: what the model has to have seen before the next sample."""
        return len(self.prompt_ids) + len(self.out_ids)

    def token(self, position: int) -> int:
        n = len(self.prompt_ids)
        return self.prompt_ids[position] if position < n else self.out_ids[position - n]

    def emit(self, text: str, finish: str | None = None, error: str | None = None) -> None:
        logprobs = self.state.take_logprobs() if self.state is not None and self.params.logprobs is not None else None
        self.on_event(TokenEvent(text, len(self.out_ids), finish, error, self.index, logprobs))


def accept(seq: Generation, tok: int, eos_ids: set[int]) -> bool:
    """Take one chosen token; report it; True while the sequence goes on generating."""
    if seq.cancelled:
        seq.finished = True
        return False
    if seq.state is not None and seq.state.error is not None:  # its grammar failed: it alone ends
        seq.finished = True
        seq.emit("", "error", error=seq.state.error)
        return False
    if (tok in eos_ids and not seq.params.ignore_eos) or tok in seq.params.stop_token_ids:
        seq.finished = True
        seq.emit(seq.text.flush(seq.out_ids), "stop")
        return False
    seq.out_ids.append(tok)
    delta = seq.text.update(seq.out_ids)
    finish: str | None = None
    if seq.text.stopped or grammar_done(seq.state):
        finish = "stop"
        if not seq.text.stopped:
            delta += seq.text.flush(seq.out_ids)
    elif len(seq.out_ids) >= seq.params.max_tokens:
        finish = "length"
        delta += seq.text.flush(seq.out_ids)
    if finish is None:
        if delta:
            seq.emit(delta)
        return True
    seq.finished = True
    seq.emit(delta, finish)
    return False


def advance(seqs: list[Generation], logits: torch.Tensor, eos_ids: set[int], texts: TokenTexts | None) -> list[bool]:
    """Choose each sequence's next token from its row of ``logits`` and ``accept`` it; whether each goes on."""
    tokens = choose_tokens(logits, seqs, eos_ids, texts)
    return [accept(seq, tok, eos_ids) for seq, tok in zip(seqs, tokens, strict=True)]


def fail(seqs: list[Generation], message: str) -> None:
    for seq in seqs:
        if not seq.finished:
            seq.finished = True
            seq.emit("", "error", error=message)
