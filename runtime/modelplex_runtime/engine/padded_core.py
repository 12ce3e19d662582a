"""The padded batch path, for models the packed path cannot run (their attention does not go through
transformers' attention interface, or needs what ``packed_attention`` does not implement).

Admitted requests get one batched, left-padded prefill (one row per request: its n sequences copy the
row's cache and logits, ``fanout``); their KV cache (a transformers ``DynamicCache``) is concatenated
onto the running batch's, then one decode forward runs for every sequence. Cache columns that only hold
padding are trimmed when sequences leave.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import torch
from transformers import DynamicCache

from modelplex_runtime.engine import fanout
from modelplex_runtime.engine.logprobs import TokenTexts
from modelplex_runtime.engine.sequence import Generation, advance, fail
from modelplex_runtime.engine.threads import ThreadPolicy
from modelplex_runtime.engine_api import BatchStats

log = logging.getLogger("modelplex_runtime.engine")


class PaddedCore:
    def __init__(self, model: torch.nn.Module, eos_ids: set[int], pad_id: int, device: torch.device,
                 max_batch_size: int, threads: ThreadPolicy | None = None,
                 on_step: Callable[[int], None] | None = None, token_texts: TokenTexts | None = None) -> None:
        self.model = model
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.device = device
        self.max_batch_size = max_batch_size
        self.threads = threads
        self.on_step = on_step
        self.token_texts = token_texts
        self.running: list[Generation] = []
        self._admitted: list[Generation] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None

    def stats(self) -> BatchStats:
        cache, mask = self._cache, self._mask
        held = 0 if cache is None else sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
        return BatchStats("padded", held, None, 0 if mask is None else int(mask.sum()), 0)

    def admit(self, waiting: deque[Generation]) -> None:
        while waiting and len(self.running) + len(self._admitted) < self.max_batch_size:
            seq = waiting.popleft()
            if not seq.cancelled:
                self._admitted.append(seq)

    def step(self) -> None:
        rows = len(self.running) + len(self._admitted)
        if self.threads is not None:
            self.threads.choose(rows)
        started = time.perf_counter()
        self._step()
        if self.threads is not None:
            self.threads.record(rows, time.perf_counter() - started)

    def _step(self) -> None:
        admitted, self._admitted = self._admitted, []
        # a failed forward fails the sequences in it: a bad prefill spares the running batch
        if admitted:
            try:
                self._prefill(admitted)
            except Exception as exc:
                log.exception("prefill failed")
                fail([s for s in admitted if s not in self.running], f"{type(exc).__name__}: {exc}")
        if self.running:
            try:
                self._decode_step()
            except Exception as exc:
                log.exception("decode step failed")
                fail(self.running, f"{type(exc).__name__}: {exc}")
                self.running, self._cache, self._mask = [], None, None

    def _prefill(self, admitted: list[Generation]) -> None:
        seqs, rows = fanout.leaders(admitted)  # a request's n sequences share one prefill
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[i, width - n :] = torch.tensor(s.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        if rows is not None:
            index = torch.tensor(rows, device=self.device)
            cache.batch_select_indices(index)
            logits, mask, seqs = logits[index], mask[index], admitted
        keep = self._accept(seqs, logits)
        if not keep:
            return
        if len(keep) < len(seqs):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            mask = mask[index]
        self._merge(cache, mask, [seqs[i] for i in keep])

    def _decode_step(self) -> None:
        assert self._cache is not None and self._mask is not None
        seqs = self.running
        if self.on_step is not None:
            self.on_step(len(seqs))
        tokens = torch.tensor([[s.out_ids[-1]] for s in seqs], dtype=torch.long, device=self.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, torch.ones((len(seqs), 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self._mask, position_ids=positions,
                         cache=self._cache, use_cache=True)
        keep = self._accept(seqs, out.logits[:, -1, :])
        if len(keep) == len(seqs):
            return
        if not keep:
            self.running, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self.running = [seqs[i] for i in keep]
        self._trim_padding()

    def _accept(self, seqs: list[Generation], logits: torch.Tensor) -> list[int]:
        """Sample one token per sequence, report it, and return the indices still generating."""
        goes_on = advance(seqs, logits, self.eos_ids, self.token_texts)
        return [i for i, on in enumerate(goes_on) if on]

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, seqs: list[Generation]) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self.running = cache, mask, list(seqs)
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)], dim=0)
            old_layer.values = torch.cat([_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)], dim=0)
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)], dim=0)
        self.running.extend(seqs)

    def _trim_padding(self) -> None:
        assert self._cache is not None and self._mask is not None
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        if first > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]
            self._mask = self._mask[:, first:]


def _left_pad(kv: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - kv.shape[2]
    if missing <= 0:
        return kv
    pad = torch.zeros((kv.shape[0], kv.shape[1], missing, kv.shape[3]), dtype=kv.dtype, device=kv.device)
    return torch.cat([pad, kv], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([torch.zeros((mask.shape[0], missing), dtype=mask.dtype, device=mask.device), mask], dim=1)
