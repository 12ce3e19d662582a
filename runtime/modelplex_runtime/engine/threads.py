"""Torch's CPU thread count per batch step, chosen from the steps' own timings.

Two counts are candidates: every core, and every core but one (left to the event loop and HTTP). Which
is faster depends on the step and on the machine: on an idle machine a long step (a prompt chunk, a big
batch) runs faster on every core; on a busy one, or for a short step, torch's worker threads wait for
cores that other processes hold, and one thread less is faster (measured on this project's shared
2-core machine: a 16-token linear layer took 45 us on one thread and 272 us on two while the machine was
loaded, and a decode step of the benchmark model went from 70-95 tokens/s on two threads to 130-170 on
one; with another session's test suite running, a tiny model at concurrency 16 served 282-1701 tokens/s on
the old fixed rule and 1191-1428 on one thread). A fixed rule is right for one machine state only, so the
policy measures: steps are grouped by
their token count (powers of two), each group keeps a moving average of seconds per token for both
counts, runs the faster, and tries the other again after ``RETRY_STEPS`` of its steps and at least
``RETRY_SECONDS`` (so at most one step in 16 runs the slower count), following a machine whose load
changes. Fewer threads win only when they are faster by ``MARGIN``: steps of one size group differ in what
they hold (decoding rows, prompt chunks), so two counts measured on different steps differ by a few tens of
percent on a quiet machine where they are equal, and every core is the better default there (served tiny
model at concurrency 16, quiet machine, three runs each against the offline limit: 70% (57-77%) on the bare
comparison, 78% (68-90%) on two fixed threads; in a later series 67% (65-70%, 1384-1454 tokens/s) bare and
72% (59-86%, 1510-1831 tokens/s) with the margin); a machine whose other work holds a core makes one thread
faster by several times, far beyond the margin.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

log = logging.getLogger("modelplex_runtime.engine")

SMOOTHING = 0.3  # weight of a new step's time in the moving average
RETRY_STEPS = 16
RETRY_SECONDS = 2.0
MARGIN = 0.2  # fewer threads must be this much faster per token to be chosen


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class ThreadPolicy(Protocol):
    def choose(self, tokens: int) -> int: ...

    def record(self, tokens: int, seconds: float) -> None: ...


def set_torch_threads(n: int) -> None:
    # the count is process-wide: read back, not remembered (another engine in the process may set it)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


def thread_policy(requested: int | None) -> ThreadPolicy:
    """``requested`` threads for every step when given (``--cpu-threads``), else the adaptive choice."""
    return FixedThreads(requested, set_torch_threads) if requested else AdaptiveThreads(cpu_cores(), set_torch_threads)


def faster(per_token: dict[int, float], margin: float = MARGIN) -> int:
    """The count to run from each count's seconds per token: the most threads, unless a smaller count is
    faster by more than ``margin``."""
    most = max(per_token)
    best = min(per_token, key=lambda t: per_token[t])
    return best if per_token[best] < (1 - margin) * per_token[most] else most


class FixedThreads:
    def __init__(self, threads: int, set_threads: Callable[[int], None]) -> None:
        self.threads = threads
        self._set = set_threads

    def choose(self, tokens: int) -> int:
        self._set(self.threads)
        return self.threads

    def record(self, tokens: int, seconds: float) -> None:
        pass


@dataclass
class _Group:
    per_token: dict[int, float] = field(default_factory=dict)  # threads -> moving average s/token
    tried_at: dict[int, tuple[int, float]] = field(default_factory=dict)  # threads -> (step, time) it last ran
    steps: int = 0
    best: int = 0  # the faster count when last compared (0: not yet)


class AdaptiveThreads:
    def __init__(self, cores: int, set_threads: Callable[[int], None], clock: Callable[[], float] = time.monotonic,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.candidates = sorted({max(1, cores - 1), cores})
        self._set = set_threads
        self._clock = clock
        self._retry = retry_seconds
        self._groups: dict[int, _Group] = {}
        self._current: tuple[int, int] | None = None  # (group, threads) of the step running now

    def choose(self, tokens: int) -> int:
        """The count for a step of ``tokens`` tokens (and sets it); call ``record`` after the step."""
        key = max(1, tokens).bit_length()
        group = self._groups.setdefault(key, _Group())
        now = self._clock()
        group.steps += 1
        untried = [t for t in self.candidates if t not in group.per_token]
        if untried:
            # a new group starts from the old fixed rule: every core from 8 tokens on, else one less
            threads = max(untried) if tokens >= 8 else min(untried)
        else:
            best = faster(group.per_token)
            threads = best
            for t in self.candidates:
                step, at = group.tried_at.get(t, (0, 0.0))
                if t != best and group.steps - step >= RETRY_STEPS and now - at >= self._retry:
                    threads = t
                    break
        group.tried_at[threads] = (group.steps, now)
        self._current = (key, threads)
        self._set(threads)
        return threads

    def record(self, tokens: int, seconds: float) -> None:
        if self._current is None:
            return
        key, threads = self._current
        self._current = None
        per_token = seconds / max(1, tokens)
        group = self._groups[key]
        averages = group.per_token
        old = averages.get(threads)
        averages[threads] = per_token if old is None else (1 - SMOOTHING) * old + SMOOTHING * per_token
        if len(averages) == len(self.candidates):
            best = faster(averages)
            if best != group.best:
                log.info("torch threads for steps of this size changed", extra={
                    "step_tokens": f"{1 << (key - 1)}-{(1 << key) - 1}", "threads": best,
                    "ms_per_token": {t: round(v * 1000, 3) for t, v in averages.items()}})
                group.best = best

    def snapshot(self) -> dict[int, dict[int, float]]:
        """Per group (token count's bit length): the moving average seconds per token of each count."""
        return {k: dict(g.per_token) for k, g in self._groups.items()}
