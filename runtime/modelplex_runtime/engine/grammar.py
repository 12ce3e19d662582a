"""Constrained decoding with llguidance: a grammar per distinct spec (cached), a matcher per sequence.

A spec (``modelplex_runtime.constraints``) becomes an llguidance grammar (JSON schema or Lark); it is
validated and compiled once into a prototype matcher, and each sequence gets a cheap ``deep_copy``.
Every step the sequence's matcher writes the allowed tokens as a bitmask, which masks that sequence's
logits row only, so constrained and free sequences share a batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.hf
import torch

from modelplex_runtime.constraints import ConstraintSpec, to_lark
from modelplex_runtime.engine_api import ConstraintError

CACHE_SIZE = 256
_SHIFTS = torch.arange(32, dtype=torch.int32)


class Compiled:
    """One compiled grammar; ``matcher()`` gives a fresh per-sequence matcher."""

    def __init__(self, prototype: llguidance.LLMatcher, vocab_size: int) -> None:
        self._prototype = prototype
        self.vocab_size = vocab_size

    def matcher(self) -> Matcher:
        return Matcher(self._prototype.deep_copy(), self.vocab_size)


class Matcher:
    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._m = matcher
        self._vocab = vocab_size

    def advance(self, token: int) -> None:
        if not self._m.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self._m.get_error()}")

    @property
    def done(self) -> bool:
        """The grammar is complete: nothing but the end of the sequence may follow."""
        return self._m.is_stopped()


def mask_rows(rows: torch.Tensor, matchers: list[tuple[int, Matcher]]) -> None:
    """Set to -inf, in each listed row of ``rows`` ([batch, vocab] float, CPU, in place), the tokens its
    grammar does not allow now. Each matcher writes its mask into its row of one bitmask for the batch
    (other rows allow everything), which is expanded and applied in one go, with no gather or scatter:
    on 2 busy cores, index ops on torch's thread pool took milliseconds per step. (llguidance's parallel
    executor measured 20x slower than this loop here too: its threads cost more than the masks, a few
    microseconds each.)"""
    batch, vocab = rows.shape
    words = (vocab + 31) // 32
    bits = torch.full((batch, words), -1, dtype=torch.int32)
    base, stride = bits.data_ptr(), words * 4
    for i, matcher in matchers:
        matcher._m.unsafe_compute_mask_ptr(base + i * stride, stride)
    allowed = ((bits.unsqueeze(-1) >> _SHIFTS) & 1).bool().view(batch, -1)[:, :vocab]
    rows.masked_fill_(~allowed, float("-inf"))


class GrammarCompiler:
    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab = vocab_size
        self._eos = sorted(eos_ids)
        self._lltok: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[str, Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def special_token_ids(self) -> dict[str, int]:
        """Special tokens by text: a grammar names them by id (``<[id]>``) rather than as text."""
        tok = self._tokenizer
        ids: dict[str, int] = {}
        for text in getattr(tok, "all_special_tokens", []):
            ids[text] = int(tok.convert_tokens_to_ids(text))
        for added_id, added in getattr(tok, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                ids[str(added)] = int(added_id)
        return ids

    def compile(self, spec: ConstraintSpec) -> Compiled:
        grammar = llguidance.LLMatcher.grammar_from_lark(to_lark(spec, self.special_token_ids()))
        with self._lock:
            hit = self._cache.get(grammar)
            if hit is not None:
                self._cache.move_to_end(grammar)
                return hit
            if self._lltok is None:
                self._lltok = llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=self._vocab, eos_token=self._eos)
            lltok = self._lltok
        error = llguidance.LLMatcher.validate_grammar(grammar, lltok)
        if error and not error.startswith("WARNING"):
            raise ConstraintError(f"{spec.describe()} cannot be enforced: {error}")
        prototype = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if prototype.is_error():
            raise ConstraintError(f"{spec.describe()} cannot be enforced: {prototype.get_error()}")
        compiled = Compiled(prototype, self._vocab)
        with self._lock:
            self._cache[grammar] = compiled
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled
