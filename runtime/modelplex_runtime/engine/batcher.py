"""Iteration-level (continuous) batching for a causal LM on one background thread.

The thread owns the model. Each iteration it admits waiting requests (one batched, left-padded
prefill), merges their KV cache into the running batch, then runs one decode forward for every
active sequence. Finished and cancelled sequences leave the batch at once, and cache columns that
only hold padding are trimmed. Results go out through per-request callbacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from modelplex_runtime.engine import fanout
from modelplex_runtime.engine.heartbeat import Heartbeat
from modelplex_runtime.engine.logprobs import TokenTexts
from modelplex_runtime.engine.sampling import make_generator
from modelplex_runtime.engine.step import SeqState, choose_tokens, grammar_done, new_state
from modelplex_runtime.engine_api import SamplingParams, TokenEvent
from modelplex_runtime.textstream import TextStream

log = logging.getLogger("modelplex_runtime.engine")

# Burst gathering from idle (see ContinuousBatcher._gather_arrivals): a lone request waits one quiet
# period (well under a decode step), a burst at most GATHER_MAX_SECONDS.
GATHER_QUIET_SECONDS = 0.0005
GATHER_MAX_SECONDS = 0.004


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

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, text: str, finish: str | None = None, error: str | None = None) -> None:
        logprobs = self.state.take_logprobs() if self.state is not None and self.params.logprobs is not None else None
        self.on_event(TokenEvent(text, len(self.out_ids), finish, error, self.index, logprobs))


class ContinuousBatcher:
    def __init__(
        self,
        model: torch.nn.Module,
        decode: Callable[[Sequence[int]], str],
        eos_ids: set[int],
        pad_id: int,
        device: torch.device,
        max_batch_size: int,
        on_step: Callable[[int], None] | None = None,
        threads_for: Callable[[int], int] | None = None,
        token_texts: TokenTexts | None = None,
        decode_special: Callable[[Sequence[int]], str] | None = None,
        stall_seconds: float = 120.0,
        gather_quiet_seconds: float = GATHER_QUIET_SECONDS,
        gather_max_seconds: float = GATHER_MAX_SECONDS,
    ) -> None:
        self.model = model
        self.decode = decode
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.device = device
        self.max_batch_size = max_batch_size
        self.on_step = on_step
        self.threads_for = threads_for
        self.token_texts = token_texts
        self.decode_special = decode_special or decode
        self.heartbeat = Heartbeat()
        self.stall_seconds = stall_seconds
        self.gather_quiet_seconds = gather_quiet_seconds
        self.gather_max_seconds = gather_max_seconds
        self._threads = 0
        self._waiting: deque[Generation] = deque()
        self._running: list[Generation] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    # ---- called from the event loop ----
    def submit(self, prompt_ids: list[int], params: SamplingParams,
               on_event: Callable[[TokenEvent], None]) -> fanout.Group:
        decode = self.decode if params.skip_special_tokens else self.decode_special
        group = fanout.Group()
        for i in range(params.n):
            group.members.append(Generation(list(prompt_ids), params, on_event, TextStream(decode, params.stop),
                                            make_generator(params, i), index=i, state=new_state(params),
                                            group=group))
        with self._cv:
            self._waiting.extend(group.members)
            self._cv.notify()
        return group

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return len(self._running)

    def health(self) -> str | None:
        return self.heartbeat.problem(self._thread, self.stall_seconds)

    def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=5)

    # ---- the model thread ----
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._running:
                    self.heartbeat.idle()
                    self._cv.wait()
                self.heartbeat.busy()
                if self._stopping:
                    return
                if not self._running:
                    self._gather_arrivals()
                admitted: list[Generation] = []
                while self._waiting and len(self._running) + len(admitted) < self.max_batch_size:
                    seq = self._waiting.popleft()
                    if not seq.cancelled:
                        admitted.append(seq)
            if self.threads_for is not None:
                wanted = self.threads_for(len(self._running) + len(admitted))
                if wanted != self._threads:
                    torch.set_num_threads(wanted)
                    self._threads = wanted
            # a failed forward fails the sequences in it, never the thread: a bad prefill spares the running batch
            if admitted:
                try:
                    with torch.inference_mode():
                        self._prefill(admitted)
                except Exception as exc:
                    log.exception("prefill failed")
                    self._fail([s for s in admitted if s not in self._running], exc)
            if self._running:
                try:
                    with torch.inference_mode():
                        self._decode_step()
                except Exception as exc:
                    log.exception("decode step failed")
                    self._fail(self._running, exc)
                    self._running, self._cache, self._mask = [], None, None
            self.heartbeat.beat()

    def _gather_arrivals(self) -> None:
        """From idle, wait while requests keep arriving (a few ms at most): a burst becomes one prefill
        and one batch instead of a prefill per request and a batch that ramps up step by step. Called
        with the condition held."""
        deadline = time.monotonic() + self.gather_max_seconds
        while len(self._waiting) < self.max_batch_size and not self._stopping:
            seen = len(self._waiting)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cv.wait(min(self.gather_quiet_seconds, remaining))
            if len(self._waiting) == seen:
                return  # quiet: nobody else is coming right now

    def _fail(self, seqs: list[Generation], exc: Exception) -> None:
        for seq in seqs:
            if not seq.finished:
                seq.finished = True
                seq.emit("", "error", error=f"{type(exc).__name__}: {exc}")

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
        seqs = self._running
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
            self._running, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._running = [seqs[i] for i in keep]
        self._trim_padding()

    def _accept(self, seqs: list[Generation], logits: torch.Tensor) -> list[int]:
        """Sample one token per sequence, report it, and return the indices still generating."""
        tokens = choose_tokens(logits, seqs, self.eos_ids, self.token_texts)
        keep: list[int] = []
        for i, (seq, tok) in enumerate(zip(seqs, tokens, strict=True)):
            if seq.cancelled:
                seq.finished = True
                continue
            if seq.state is not None and seq.state.error is not None:  # its grammar failed: it alone ends
                seq.finished = True
                seq.emit("", "error", error=seq.state.error)
                continue
            finish: str | None = None
            if (tok in self.eos_ids and not seq.params.ignore_eos) or tok in seq.params.stop_token_ids:
                finish = "stop"
            else:
                seq.out_ids.append(tok)
                delta = seq.text.update(seq.out_ids)
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
                    keep.append(i)
                    continue
                seq.finished = True
                seq.emit(delta, finish)
                continue
            seq.finished = True
            seq.emit(seq.text.flush(seq.out_ids), finish)
        return keep

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, seqs: list[Generation]) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._running = cache, mask, list(seqs)
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)], dim=0)
            old_layer.values = torch.cat([_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)], dim=0)
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)], dim=0)
        self._running.extend(seqs)

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
