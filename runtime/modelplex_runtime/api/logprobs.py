"""Logprobs in OpenAI's two response shapes: chat (``content`` of token objects) and text completions
(parallel ``tokens`` / ``token_logprobs`` / ``top_logprobs`` / ``text_offset`` lists)."""

from __future__ import annotations

from typing import Any

from modelplex_runtime.engine_api import TokenLogprob


def chat_logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if tokens is None:
        return None
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes),
                         "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(b)} for a, lp, b in t.top]}
                        for t in tokens],
            "refusal": None}


def completion_logprobs(tokens: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """``offset``: where the first token's text starts in the choice's text (after earlier chunks)."""
    if tokens is None:
        return None
    offsets: list[int] = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{a: lp for a, lp, _ in t.top} for t in tokens], "text_offset": offsets}
