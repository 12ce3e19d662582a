"""The packed batch path: each step is one forward over the batch's new tokens, with no padding.

Decoding sequences feed one token each and sequences being prefilled feed a chunk of their prompt
(``step_plan``), all in one row of tokens; attention reads and writes each sequence's own row of the
slot cache (``packed_attention``, ``kv_slots``). Only the rows whose next token is due get logits.

A request's n sequences prefill once: the first one admitted (the leader) feeds the prompt, its siblings
feed nothing until the step that ends it, then copy its cache row and sample from its logits row.

Memory is bounded by the KV budget, not only by the batch size: a sequence is admitted when its prompt
fits; when a running batch outgrows the budget, the newest sequence is preempted (its cache row freed)
and goes back to the head of the queue, to be recomputed from its prompt and the tokens it already
generated. An out-of-memory error in a step fails the one sequence that fed the most tokens to it and
the others go on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import torch

from modelplex_runtime.engine.kv_slots import SlotCache, capacity
from modelplex_runtime.engine.logprobs import TokenTexts
from modelplex_runtime.engine.packed_attention import LAYOUT_KWARG, Chunk, StepLayout
from modelplex_runtime.engine.sequence import Generation, advance, fail
from modelplex_runtime.engine.step_plan import step_tokens
from modelplex_runtime.engine.threads import ThreadPolicy
from modelplex_runtime.engine_api import BatchStats

log = logging.getLogger("modelplex_runtime.engine")


def is_out_of_memory(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; the CPU allocator raises a plain RuntimeError
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


class PackedCore:
    def __init__(self, model: torch.nn.Module, cache: SlotCache, eos_ids: set[int], max_step_tokens: int,
                 max_len: int, requeue: Callable[[Generation], None],
                 threads: ThreadPolicy | None = None,
                 on_step: Callable[[int], None] | None = None, token_texts: TokenTexts | None = None) -> None:
        self.model = model
        self.cache = cache
        self.eos_ids = eos_ids
        self.max_step_tokens = max_step_tokens
        self.max_len = max_len
        self.requeue = requeue
        self.threads = threads
        self.on_step = on_step
        self.token_texts = token_texts
        self.running: list[Generation] = []
        self.preemptions = 0

    def stats(self) -> BatchStats:
        c = self.cache
        return BatchStats("packed", c.bytes, c.budget_tokens * c.shape.bytes_per_token,
                          sum(s.cached for s in list(self.running)), self.preemptions)

    # ---- admission (called with the batcher's lock held: arithmetic only, no allocation) ----
    def admit(self, waiting: deque[Generation]) -> None:
        while waiting and len(self.running) < self.cache.max_slots:
            seq = waiting[0]
            if seq.cancelled:
                waiting.popleft()
                seq.finished = True
                continue
            if seq.length == 0:  # nothing to continue from (the request layer refuses these first)
                waiting.popleft()
                fail([seq], "the prompt is empty (0 tokens)")
                continue
            need = seq.length + 1
            if need > self.cache.budget_tokens:
                waiting.popleft()
                fail([seq], f"the sequence needs {need} tokens of KV cache but the cache holds at most "
                            f"{self.cache.budget_tokens} (raise --kv-cache-gib)")
                continue
            cols = max([need] + [s.length + 1 for s in self.running])
            if self._capacity(len(self.running) + 1, cols) is None:
                return  # waits until running sequences leave room
            waiting.popleft()
            seq.cached = 0
            seq.leader = self._leader_for(seq)
            self.running.append(seq)

    def _leader_for(self, seq: Generation) -> Generation | None:
        """A running sibling whose prompt is still being prefilled, for ``seq`` to copy instead of its own."""
        if seq.group is None or seq.out_ids:
            return None
        return next((s for s in self.running if s.group is seq.group and s.leader is None and not s.out_ids
                     and s.cached < s.length), None)

    # ---- one step ----
    def step(self) -> None:
        self._drop_finished()
        if not self.running:
            self.cache.clear()
            return
        for s in self.running:  # a leader that left before its prompt was read: prefill on one's own
            if s.leader is not None and (s.leader.finished or s.leader not in self.running):
                s.leader = None
        feed = step_tokens([0 if s.leader is not None else s.length - s.cached for s in self.running],
                           self.max_step_tokens)
        fed = [(s, n) for s, n in zip(self.running, feed, strict=True) if n > 0]
        try:
            fed = self._make_room(fed)
            if fed:
                self._forward(fed)
        except Exception as exc:
            if not is_out_of_memory(exc):
                log.exception("batch step failed")
                fail(self.running, f"{type(exc).__name__}: {exc}")
                self.running = []
                self.cache.clear()
                return
            # the sequence that brought the most tokens to this step goes; the others retry next step
            victim = max(fed, key=lambda sn: (sn[1], self.running.index(sn[0])))[0]
            log.warning("out of memory in a batch step; failing one sequence",
                        extra={"tokens": victim.length, "batch": len(self.running)})
            fail([victim], f"out of memory: {exc}")
            self._drop_finished()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _capacity(self, rows: int, cols: int) -> tuple[int, int] | None:
        c = self.cache
        return capacity(c.slots, c.columns, rows, cols, c.max_slots, self.max_len + 1, c.budget_tokens)

    def _make_room(self, fed: list[tuple[Generation, int]]) -> list[tuple[Generation, int]]:
        """Give every running sequence a slot and enough columns for this step, growing the cache, or
        preempting the newest sequences when the budget is reached; returns what is still fed."""
        while True:
            fed_end = {id(s): s.cached + n for s, n in fed}
            cols = max(fed_end.get(id(s), s.cached) for s in self.running)
            rows = len(self.running)
            self._assign_free_slots()
            if cols <= self.cache.columns and all(0 <= s.slot for s in self.running):
                return fed
            size = self._capacity(rows, cols)
            if size is not None:
                self._rebuild(*size)
                return fed
            victim = self.running[-1]
            if rows == 1:
                fail([victim], f"the sequence reached {cols} tokens, more than the KV cache holds "
                               f"({self.cache.budget_tokens} tokens; raise --kv-cache-gib)")
                self._drop_finished()
                return []
            self._preempt(victim)
            fed = [(s, n) for s, n in fed if s is not victim]

    def _rebuild(self, slots: int, cols: int) -> None:
        live = [s for s in self.running if s.slot >= 0]
        self.cache.rebuild([s.slot for s in live], slots, cols)
        for i, s in enumerate(live):
            s.slot = i
        free = iter(range(len(live), slots))
        for s in self.running:
            if s.slot < 0:
                s.slot = next(free)

    def _assign_free_slots(self) -> None:
        used = {s.slot for s in self.running}
        free = (i for i in range(self.cache.slots) if i not in used)
        for s in self.running:
            if s.slot < 0:
                s.slot = next(free, -1)

    def _preempt(self, seq: Generation) -> None:
        """Free ``seq``'s cache row and queue it first: it is recomputed from its tokens when it fits again."""
        self.running.remove(seq)
        seq.slot, seq.cached, seq.leader = -1, 0, None
        self.preemptions += 1
        log.info("preempted a sequence to stay within the KV cache budget",
                 extra={"tokens": seq.length, "batch": len(self.running)})
        self.requeue(seq)

    def _drop_finished(self) -> None:
        keep = []
        for s in self.running:
            if s.cancelled:
                s.finished = True
            if s.finished:
                s.slot = -1
            else:
                keep.append(s)
        self.running = keep

    def _forward(self, fed: list[tuple[Generation, int]]) -> None:
        decoding = sorted((s for s, n in fed if s.length - s.cached == 1), key=lambda s: s.slot)
        prefilling = [(s, n) for s, n in fed if s.length - s.cached > 1]
        ids = [s.token(s.cached) for s in decoding]
        chunks, sampled, rows = [], list(decoding), list(range(len(decoding)))
        ending: list[Generation] = []  # leaders whose prompt this step ends
        for s, n in prefilling:
            chunks.append(Chunk(len(ids), n, s.slot, s.cached))
            ids += [s.token(p) for p in range(s.cached, s.cached + n)]
            if s.cached + n == s.length:  # the chunk ends its prompt: its last token's logits give the next token
                sampled.append(s)
                rows.append(len(ids) - 1)
                ending.append(s)
        if self.on_step is not None:
            self.on_step(len(fed))
        if self.threads is not None:
            self.threads.choose(len(ids))
        started = time.perf_counter()
        layout = StepLayout(self.cache, [s.slot for s in decoding], [s.length for s in decoding], chunks)
        device = self.cache.shape.device
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long, device=device), position_ids=layout.positions,
                         use_cache=False, logits_to_keep=torch.tensor(rows, dtype=torch.long, device=device),
                         **{LAYOUT_KWARG: layout})
        if self.threads is not None:
            self.threads.record(len(ids), time.perf_counter() - started)
        for s, n in fed:
            s.cached += n
        logits = out.logits[0]
        siblings = self._copy_to_siblings(ending)
        if siblings:  # each sibling samples from its leader's row
            row_of = {id(s): i for i, s in enumerate(sampled)}
            index = list(range(len(sampled))) + [row_of[id(sib.leader)] for sib in siblings]
            for sib in siblings:
                sib.leader = None
            sampled += siblings
            logits = logits.index_select(0, torch.tensor(index, dtype=torch.long, device=device))
        if sampled:
            advance(sampled, logits, self.eos_ids, self.token_texts)
        self._drop_finished()

    def _copy_to_siblings(self, leaders: list[Generation]) -> list[Generation]:
        """The waiting siblings of ``leaders``, each given a copy of its leader's cache row."""
        siblings = []
        for leader in leaders:
            mine = [s for s in self.running if s.leader is leader]
            if mine:
                self.cache.copy_prefix(leader.slot, [s.slot for s in mine], leader.cached)
                for s in mine:
                    s.cached = leader.cached
                siblings += mine
        return siblings
