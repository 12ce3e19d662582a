"""Log probabilities of generated tokens, from the model's raw logits (before penalties, bias, masks and
temperature: what a forward pass of the model gives), and the text and bytes of each token."""

from __future__ import annotations

import re
from typing import Any

import torch

from modelplex_runtime.engine_api import TokenLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: byte-level BPE pieces -> raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_LEVEL = _byte_level_decoder()


class TokenTexts:
    """Each token's text and raw bytes (a token may hold part of a UTF-8 character), cached."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._cache: dict[int, tuple[str, tuple[int, ...]]] = {}

    def get(self, token: int) -> tuple[str, tuple[int, ...]]:
        hit = self._cache.get(token)
        if hit is None:
            hit = self._cache[token] = self._compute(token)
        return hit

    def _compute(self, token: int) -> tuple[str, tuple[int, ...]]:
        text = self._tok.decode([token], skip_special_tokens=False)
        if "\ufffd" not in text:
            return text, tuple(text.encode("utf-8"))
        piece = self._tok.convert_ids_to_tokens(token) or ""
        match = _BYTE_TOKEN.fullmatch(piece)
        if match:
            return text, (int(match.group(1), 16),)
        if piece and all(c in _BYTE_LEVEL for c in piece):
            return text, tuple(_BYTE_LEVEL[c] for c in piece)
        return text, tuple(text.encode("utf-8"))


def token_logprob(raw: torch.Tensor, token: int, top: int, texts: TokenTexts) -> TokenLogprob:
    """``raw``: one [vocab] row of log-softmaxed raw logits."""
    text, data = texts.get(token)
    alternatives: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
    if top > 0:
        values, ids = torch.topk(raw, min(top, raw.shape[-1]))
        alternatives = tuple((texts.get(i)[0], v, texts.get(i)[1])
                             for v, i in zip(values.tolist(), ids.tolist(), strict=True))
    return TokenLogprob(text, float(raw[token]), data, alternatives)
