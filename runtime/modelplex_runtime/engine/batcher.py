"""Iteration-level (continuous) batching for a causal LM on one background thread.

The thread owns the model. Each iteration it admits waiting requests into the batch, then runs one
step of the batch path (``core``): the packed path (``packed_core``: one unpadded forward that mixes
prompt chunks with decode tokens, over a preallocated KV cache) or, for models it cannot run, the
padded path (``padded_core``). Finished and cancelled sequences leave the batch at once. Results go
out through per-request callbacks. A request for n sequences submits n ``Generation`` objects of one
``fanout.Group``; the batch paths prefill its prompt once for all of them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from modelplex_runtime.engine import fanout
from modelplex_runtime.engine.heartbeat import Heartbeat
from modelplex_runtime.engine.sampling import make_generator
from modelplex_runtime.engine.sequence import Generation
from modelplex_runtime.engine.step import new_state
from modelplex_runtime.engine_api import BatchStats, SamplingParams, TokenEvent
from modelplex_runtime.textstream import TextStream

# Burst gathering from idle (see ContinuousBatcher._gather_arrivals): a lone request waits one quiet
# period (well under a decode step), a burst at most GATHER_MAX_SECONDS.
GATHER_QUIET_SECONDS = 0.0005
GATHER_MAX_SECONDS = 0.004

__all__ = ["ContinuousBatcher", "Core", "Generation"]


class Core(Protocol):
    running: list[Generation]

    def admit(self, waiting: deque[Generation]) -> None: ...

    def step(self) -> None: ...

    def stats(self) -> BatchStats: ...


class ContinuousBatcher:
    def __init__(
        self,
        make_core: Callable[[Callable[[Generation], None]], Core],
        decode: Callable[[Sequence[int]], str],
        device: torch.device,
        max_batch_size: int,
        decode_special: Callable[[Sequence[int]], str] | None = None,
        stall_seconds: float = 120.0,
        gather_quiet_seconds: float = GATHER_QUIET_SECONDS,
        gather_max_seconds: float = GATHER_MAX_SECONDS,
    ) -> None:
        """``make_core(requeue)`` builds the batch path; ``requeue`` puts a sequence back at the head of
        the queue (a preempted one)."""
        self.decode = decode
        self.decode_special = decode_special or decode
        self.device = device
        self.max_batch_size = max_batch_size
        self.heartbeat = Heartbeat()
        self.stall_seconds = stall_seconds
        self.gather_quiet_seconds = gather_quiet_seconds
        self.gather_max_seconds = gather_max_seconds
        self._waiting: deque[Generation] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.core = make_core(self._requeue)
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    # ---- called from the event loop ----
    def submit(self, prompt_ids: list[int], params: SamplingParams,
               on_event: Callable[[TokenEvent], None]) -> fanout.Group:
        decode = self.decode if params.skip_special_tokens else self.decode_special
        # a sequence with per-sequence logits work is sampled from its processed row on the host
        # (``step.choose_tokens``); the others where the logits are
        device = torch.device("cpu") if params.processed else self.device
        group = fanout.Group()
        for i in range(params.n):
            group.members.append(Generation(list(prompt_ids), params, on_event, TextStream(decode, params.stop),
                                            make_generator(params, i, device), index=i, state=new_state(params),
                                            group=group))
        with self._cv:
            self._waiting.extend(group.members)
            self._cv.notify()
        return group

    def queue_depth(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return len(self.core.running)

    def health(self) -> str | None:
        return self.heartbeat.problem(self._thread, self.stall_seconds)

    def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=5)

    # ---- the model thread ----
    def _requeue(self, seq: Generation) -> None:
        with self._cv:
            self._waiting.appendleft(seq)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self.core.running:
                    self.heartbeat.idle()
                    self._cv.wait()
                self.heartbeat.busy()
                if self._stopping:
                    return
                if not self.core.running:
                    self._gather_arrivals()
                self.core.admit(self._waiting)
            # a failed step fails the sequences in it, never the thread (each core catches its own)
            with torch.inference_mode():
                self.core.step()
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
