"""POST /v1/completions: text completions, one or several prompts (strings or token ids), n each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from modelplex_runtime import protocol
from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.api.generation import ClientDisconnected, events, gather
from modelplex_runtime.api.logprobs import completion_logprobs
from modelplex_runtime.bodies import JSONBodyRoute
from modelplex_runtime.engine_api import Engine, SamplingParams, TokenEvent
from modelplex_runtime.errors import bad_request, error_body
from modelplex_runtime.sse import DONE, ChunkFrames, sse_event

MAX_PROMPTS = 64


class CompletionRequest(protocol.SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    best_of: int | None = Field(default=None, ge=1)
    suffix: str | None = None

    def refuse_unhonoured(self) -> None:
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise protocol.refuse("best_of", "send n instead (best_of other than n is not supported)")
        if self.suffix:
            raise protocol.refuse("suffix", "insertion (fill in the middle) is not supported")
        if self.echo and self.logprobs is not None:
            raise protocol.refuse("echo", "echo with logprobs would need the prompt's logprobs, which are not computed")


def prompts_of(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """Each prompt of a request: a string or a list of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    if not all(isinstance(p, str | list) for p in prompt) or len({type(p) for p in prompt}) > 1:
        raise bad_request("prompt is a string, a list of strings, token ids or a list of token id lists", param="prompt")
    if len(prompt) > MAX_PROMPTS:
        raise bad_request(f"{len(prompt)} prompts given; at most {MAX_PROMPTS} per request", param="prompt")
    return list(prompt)  # type: ignore[arg-type]


def router(ctx: RuntimeContext) -> APIRouter:
    api = APIRouter(route_class=JSONBodyRoute)

    @api.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        engine = ctx.engine_for(body.model, ("Plain", "GGUF"), "text completions")
        body.refuse_unhonoured()
        prompts = prompts_of(body.prompt)
        n = body.n or 1
        protocol.check_n(n, ctx.settings.max_batch_size)
        ticket = ctx.gate.admit(n * len(prompts))
        try:
            ids = [await _prompt_ids(engine, p) for p in prompts]
            params = _params(engine, body, ids)
        except BaseException:
            ticket.release()
            raise
        rid = "cmpl-" + uuid.uuid4().hex
        stream = events(ctx, engine, ids, params, ticket, whole=not body.stream)
        prompt_tokens = sum(len(p) for p in ids)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(ctx, rid, stream, prompt_tokens, params, include_usage),
                                     media_type="text/event-stream")
        try:
            done = await gather(request, stream)
        except ClientDisconnected:
            return Response(status_code=499)
        choices = []
        for i, seq in enumerate(done):
            prompt = prompts[i // n]
            text = prompt + seq.text if body.echo and isinstance(prompt, str) else seq.text
            choices.append({"index": i, "text": text, "logprobs": completion_logprobs(seq.logprobs),
                            "finish_reason": seq.finish_reason})
        return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": ctx.served,
                "choices": choices, "usage": protocol.usage(prompt_tokens, sum(s.completion_tokens for s in done)),
                "system_fingerprint": None}

    return api


async def _prompt_ids(engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return await asyncio.to_thread(engine.tokenize_text, prompt, True)
    try:  # out-of-vocabulary ids would fail the whole batch's forward
        await asyncio.to_thread(engine.detokenize, prompt, False)
    except ValueError as exc:
        raise bad_request(str(exc), param="prompt") from exc
    return prompt


def _params(engine: Engine, body: CompletionRequest, ids: list[list[int]]) -> SamplingParams:
    limit = engine.info.max_model_len
    for p in ids:  # every prompt of several: an empty one among them is refused too (found by fuzzing)
        protocol.check_not_empty(len(p), "prompt")
    longest = max(len(p) for p in ids)
    if body.max_tokens is None:  # OpenAI's default for completions is 16 tokens
        max_tokens = min(16, protocol.check_context(longest, None, limit, "prompt"))
    else:
        max_tokens = protocol.check_context(longest, body.max_tokens, limit, "prompt")
    return protocol.sampling_params(body, max_tokens, engine.info.vocab_size, logprobs=body.logprobs)


async def _sse(ctx: RuntimeContext, rid: str, stream: AsyncIterator[TokenEvent], prompt_tokens: int,
               params: SamplingParams, include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())

    def payload(index: int, text: Any, finish: Any, logprobs: Any = None) -> dict[str, Any]:
        p: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": ctx.served,
                             "system_fingerprint": None,
                             "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            p["usage"] = None
        return p

    frames: dict[int, ChunkFrames] = {}
    offsets: dict[int, int] = {}
    completion = 0
    async for ev in stream:
        if ev.error:
            yield sse_event(error_body(f"generation failed: {ev.error}", type="internal_error"))
            break
        if ev.text or ev.finish_reason is not None or ev.logprobs:
            if params.logprobs is not None:
                start = offsets.get(ev.index, 0)
                offsets[ev.index] = start + len(ev.text)
                yield sse_event(payload(ev.index, ev.text, ev.finish_reason, completion_logprobs(ev.logprobs or [], start)))
            else:
                if ev.index not in frames:
                    frames[ev.index] = ChunkFrames(payload(ev.index, ChunkFrames.TEXT, ChunkFrames.FINISH))
                yield frames[ev.index].frame(ev.text, ev.finish_reason)
        if ev.finish_reason is not None:
            completion += ev.completion_tokens
    if include_usage:
        yield sse_event({"id": rid, "object": "text_completion", "created": created, "model": ctx.served,
                         "choices": [], "usage": protocol.usage(prompt_tokens, completion)})
    yield DONE
