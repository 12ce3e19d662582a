"""Running generations for an HTTP request: the engine's events on the event loop, gathered or streamed,
and stopped when the client leaves.

A request has one or more sequences (``n`` per prompt, several prompts in a text completion); every
event carries its sequence's ``index`` (prompt i, sample j -> i * n + j, as OpenAI numbers choices).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from modelplex_runtime.admission import Ticket
from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.engine_api import Engine, GenerationHandle, SamplingParams, TokenEvent, TokenLogprob
from modelplex_runtime.errors import APIError

T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


@dataclass
class Finished:
    """One sequence, gathered: its text, how it ended, its tokens' logprobs."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass
class _Timing:
    arrived: float = field(default_factory=time.perf_counter)
    first_at: float | None = None


def _merge(first: TokenEvent, then: TokenEvent) -> TokenEvent:
    logprobs = (first.logprobs or []) + (then.logprobs or []) if first.logprobs or then.logprobs else None
    return TokenEvent(first.text + then.text, then.completion_tokens, then.finish_reason, then.error,
                      then.index, logprobs)


def coalesce(events: Sequence[TokenEvent]) -> list[TokenEvent]:
    """Events that queued up while the loop was busy, one per sequence (fewer frames to write exactly
    when the server is behind)."""
    merged: dict[int, TokenEvent] = {}
    for ev in events:
        merged[ev.index] = _merge(merged[ev.index], ev) if ev.index in merged else ev
    return list(merged.values())


def events(ctx: RuntimeContext, engine: Engine, prompts: Sequence[list[int]], params: SamplingParams,
           ticket: Ticket, whole: bool = False) -> AsyncIterator[TokenEvent]:
    """The request's events (see ``_events``). Its admission ticket goes back when the events end, or
    when the iterator is dropped without ever starting (a stream whose client left before its first byte)."""
    stream = _events(ctx, engine, prompts, params, ticket, whole)
    weakref.finalize(stream, ticket.release)
    return stream


async def _events(ctx: RuntimeContext, engine: Engine, prompts: Sequence[list[int]], params: SamplingParams,
                  ticket: Ticket, whole: bool) -> AsyncIterator[TokenEvent]:
    """The events of every sequence of the request; ends when each has finished. ``whole`` (a
    non-streamed response) gathers each sequence's text on the engine's thread and wakes the loop once
    per sequence, at its end, instead of once per token."""
    pump = ctx.pump()
    metrics = ctx.metrics
    queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
    timing = _Timing()
    handles: list[GenerationHandle] = []
    left = len(prompts) * params.n
    try:
        for i, prompt in enumerate(prompts):
            handles.append(engine.generate(prompt, params, _on_token(pump, queue, timing, i * params.n, whole)))
            metrics.prompt_tokens.inc(len(prompt))
        ttft_observed = False
        while left:
            ready = [await queue.get()]
            while not queue.empty():
                ready.append(queue.get_nowait())
            if not ttft_observed and timing.first_at is not None:
                ttft_observed = True
                metrics.ttft.observe(timing.first_at - timing.arrived)
            for ev in coalesce(ready):
                if ev.finish_reason is not None:
                    left -= 1
                    _observe_finish(ctx, timing, ev)
                yield ev
    finally:
        ticket.release()
        if left:
            for handle in handles:
                handle.cancel()
            metrics.cancelled.inc()


def _on_token(pump: Any, queue: asyncio.Queue[TokenEvent], timing: _Timing, offset: int, whole: bool) -> Any:
    gathered: dict[int, Finished] = {}

    def on_token(ev: TokenEvent) -> None:
        first = timing.first_at is None
        if first and ev.completion_tokens > 0:
            timing.first_at = time.perf_counter()
        ev.index += offset
        if not whole:
            # The first text (tokens held back for a stop string or an incomplete character come with
            # it) and the finish go at once; the events between may wait for the stream interval.
            pump.post(queue, ev, urgent=first or ev.finish_reason is not None)
            return
        done = gathered.setdefault(ev.index, Finished())
        done.text += ev.text
        if ev.logprobs is not None:
            done.logprobs = (done.logprobs or []) + ev.logprobs
        if ev.finish_reason is not None:
            del gathered[ev.index]
            pump.post(queue, TokenEvent(done.text, ev.completion_tokens, ev.finish_reason, ev.error, ev.index,
                                        done.logprobs), urgent=True)

    return on_token


def _observe_finish(ctx: RuntimeContext, timing: _Timing, ev: TokenEvent) -> None:
    now = time.perf_counter()
    ctx.metrics.generation_tokens.inc(ev.completion_tokens)
    ctx.metrics.e2e.observe(now - timing.arrived)
    if timing.first_at is not None and ev.completion_tokens > 1:
        ctx.metrics.tpot.observe((now - timing.first_at) / (ev.completion_tokens - 1))


async def gather(request: Request, stream: AsyncIterator[TokenEvent]) -> list[Finished]:
    """Every sequence to its end, in index order; ClientDisconnected (work cancelled) if the client leaves."""

    async def consume() -> list[Finished]:
        done: dict[int, Finished] = {}
        async for ev in stream:
            seq = done.setdefault(ev.index, Finished())
            seq.text += ev.text
            seq.completion_tokens = ev.completion_tokens
            seq.finish_reason, seq.error = ev.finish_reason, ev.error
            if ev.logprobs is not None:
                seq.logprobs = (seq.logprobs or []) + ev.logprobs
        for seq in done.values():
            if seq.error:
                raise APIError(500, f"generation failed: {seq.error}", type="internal_error")
        return [done[i] for i in sorted(done)]

    try:
        return await until_disconnect(request, consume())
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; if the client disconnects first, ``work`` is cancelled and ClientDisconnected raised."""

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected()
    return task.result()
