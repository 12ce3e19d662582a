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
        self._bits = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)

    def mask(self, row: torch.Tensor) -> None:
        """Set the logits of tokens the grammar does not allow now to -inf (``row``: [vocab] float, in place)."""
        self._m.unsafe_compute_mask_ptr(self._bits.data_ptr(), self._bits.numel() * 4)
        allowed = ((self._bits.unsqueeze(1) >> _SHIFTS) & 1).bool().flatten()[: row.shape[-1]]
        if allowed.shape[0] < row.shape[-1]:
            allowed = torch.cat([allowed, torch.zeros(row.shape[-1] - allowed.shape[0], dtype=torch.bool)])
        row.masked_fill_(~allowed.to(row.device), float("-inf"))

    def advance(self, token: int) -> None:
        if not self._m.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self._m.get_error()}")

    @property
    def done(self) -> bool:
        """The grammar is complete: nothing but the end of the sequence may follow."""
        return self._m.is_stopped()


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
