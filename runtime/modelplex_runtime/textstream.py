"""Incremental detokenization with stop strings: what text may be sent now, and whether to stop.

Pure logic over a ``decode`` function so it is testable without a tokenizer. Text that could be the
start of a stop string, or an incomplete UTF-8 character, is held back until it is decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stops = [s for s in stops if s]
        self._emitted = 0
        # Incremental decoding: ``_decoded`` is the text of ids[:_read]; a new token is decoded together
        # with the tokens from ``_prefix`` (the previous step's), so tokenizers whose text depends on the
        # neighbouring token (a leading-space marker) decode it right. Each step decodes a few tokens,
        # not the whole output (which made long generations quadratic).
        self._decoded = ""
        self._prefix = 0
        self._read = 0
        self.text = ""
        self.stopped = False

    def _full_text(self, token_ids: Sequence[int]) -> str:
        """The text of all of ``token_ids`` (ending in U+FFFD while a character is still incomplete)."""
        before = self._decode(token_ids[self._prefix : self._read])
        window = self._decode(token_ids[self._prefix :])
        new = window[len(before) :]
        if len(window) > len(before) and not window.endswith(_REPLACEMENT):
            self._decoded += new
            self._prefix, self._read = self._read, len(token_ids)
            return self._decoded
        return self._decoded + new

    def update(self, token_ids: Sequence[int]) -> str:
        """Take the generated ids so far; return the newly releasable text (sets ``stopped`` on a stop string)."""
        full = self._full_text(token_ids)
        if self._stops:
            start = max(0, self._emitted - max(len(s) for s in self._stops))
            hits = [i for i in (full.find(s, start) for s in self._stops) if i >= 0]
            if hits:
                self.stopped = True
                full = full[: min(hits)]
                return self._release(full, len(full))
        safe = len(full)
        if full.endswith(_REPLACEMENT):
            safe = len(full.rstrip(_REPLACEMENT))
        safe = min(safe, len(full) - _partial_stop_suffix(full, self._stops))
        return self._release(full, safe)

    def flush(self, token_ids: Sequence[int]) -> str:
        """At the end of generation: release everything not yet sent."""
        full = self._full_text(token_ids)
        return self._release(full, len(full))

    def _release(self, full: str, upto: int) -> str:
        upto = max(upto, self._emitted)
        delta = full[self._emitted : upto]
        self._emitted = upto
        self.text = full[:upto]
        return delta


def _partial_stop_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
