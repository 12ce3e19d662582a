"""Tokenize and detokenize, shared by every engine kind (they all hold a Hugging Face tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TokenizerMixin:
    """Engine methods that only need ``self.tokenizer``."""

    tokenizer: Any

    def tokenize_text(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        vocab = len(self.tokenizer)
        bad = [i for i in ids if i < 0 or i >= vocab]
        if bad:
            # decoding an out-of-range id raises deep inside the tokenizer; name the ids instead
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (size {vocab})")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
