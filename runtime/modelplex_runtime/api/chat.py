"""POST /v1/chat/completions: the handler and its responses, whole and streamed (tool calls included).

Streamed tool calls follow OpenAI: content deltas until a call starts, then per call one delta with its
``index``, ``id``, ``type`` and ``function.name`` (arguments ""), then deltas holding fragments of
``function.arguments``; the last chunk of the choice has ``finish_reason: "tool_calls"``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelplex_runtime import images, protocol, tool_parsers
from modelplex_runtime.api import chat_request as cr
from modelplex_runtime.api.context import TEXT_KINDS, RuntimeContext
from modelplex_runtime.api.generation import ClientDisconnected, Finished, events, gather
from modelplex_runtime.api.logprobs import chat_logprobs
from modelplex_runtime.bodies import JSONBodyRoute
from modelplex_runtime.engine_api import ConstraintError, Engine, SamplingParams, TokenEvent
from modelplex_runtime.errors import bad_request, error_body
from modelplex_runtime.sse import DONE, ChunkFrames, sse_event


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {**protocol.usage(prompt, completion),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def router(ctx: RuntimeContext) -> APIRouter:
    api = APIRouter(route_class=JSONBodyRoute)

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(body: cr.ChatCompletionRequest, request: Request) -> Any:
        engine = ctx.engine_for(body.model, TEXT_KINDS, "chat completions")
        body.refuse_unhonoured()
        plan = cr.tool_plan(body, engine.info.tool_call_parser)
        n = body.n or 1
        protocol.check_n(n, ctx.settings.max_batch_size)
        ticket = ctx.gate.admit(n)
        try:
            prompt_ids, params = await _prepare(ctx, engine, body, plan)
        except BaseException:
            ticket.release()
            raise
        rid = "chatcmpl-" + uuid.uuid4().hex
        stream = events(ctx, engine, [prompt_ids], params, ticket, whole=not body.stream)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(ctx, rid, stream, len(prompt_ids), params, plan.parser, include_usage),
                                     media_type="text/event-stream")
        try:
            done = await gather(request, stream)
        except ClientDisconnected:
            return Response(status_code=499)
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": ctx.served,
            "choices": [_choice(i, seq, plan.parser, body.parallel_tool_calls is not False)
                        for i, seq in enumerate(done)],
            "usage": usage(len(prompt_ids), sum(s.completion_tokens for s in done)),
            "system_fingerprint": None,
        }

    return api


async def _prepare(ctx: RuntimeContext, engine: Engine, body: cr.ChatCompletionRequest,
                   plan: cr.ToolPlan) -> tuple[list[int], SamplingParams]:
    cr.validate_content_parts(body.messages)
    parts = cr.image_parts(body.messages)
    if parts and ctx.kind != "VisionPlain":
        raise bad_request(f"model {ctx.served!r} is a {ctx.kind} model and does not accept images", param="messages")
    messages = cr.message_dicts(body.messages)
    schema = cr.response_schema(body.response_format)
    spec = plan.constraint or schema
    if ctx.kind == "VisionPlain":
        _refuse_for_vision(body, spec)
        limit = getattr(ctx.entry.selector, "max_num_images", None)
        if limit is not None and len(parts) > limit:
            raise bad_request(f"{len(parts)} images given; model {ctx.served!r} accepts at most {limit}", param="messages")
        max_edge = getattr(ctx.entry.selector, "max_edge", None)
        allow = ctx.settings.allow_remote_images
        pil = await asyncio.to_thread(
            lambda: [images.load_image(images.fetch_image_bytes(images.image_url_of(p), allow), max_edge) for p in parts])
        prompt_ids = await asyncio.to_thread(engine.tokenize_chat, messages, True, pil)  # type: ignore[call-arg]
    else:
        prompt_ids = await asyncio.to_thread(engine.tokenize_chat, messages, True, plan.template_tools)
    compiled = None
    if spec is not None:
        try:
            compiled = await asyncio.to_thread(engine.compile_constraint, spec)
        except ConstraintError as exc:
            raise bad_request(str(exc), param="tools" if plan.constraint else "response_format",
                              code="invalid_schema") from None
    max_tokens = protocol.check_context(len(prompt_ids), body.max_completion_tokens or body.max_tokens,
                                        engine.info.max_model_len)
    params = protocol.sampling_params(body, max_tokens, engine.info.vocab_size, logprobs=body.logprobs_k,
                                      constraint=compiled)
    if plan.parser is not None and body.skip_special_tokens is not False:
        # the tool-call markers of some formats are special tokens: keep them in the text to parse
        params = dataclasses.replace(params, skip_special_tokens=False)
    return prompt_ids, params


def _refuse_for_vision(body: cr.ChatCompletionRequest, spec: object) -> None:
    """VisionPlain requests run through ``model.generate`` one at a time: only plain sampling."""
    for name, value in (("tools", body.tools), ("response_format", spec), ("logprobs", body.logprobs),
                        ("presence_penalty", body.presence_penalty), ("frequency_penalty", body.frequency_penalty),
                        ("repetition_penalty", body.repetition_penalty), ("logit_bias", body.logit_bias),
                        ("min_tokens", body.min_tokens), ("stop_token_ids", body.stop_token_ids)):
        if value:
            raise protocol.refuse(name, "VisionPlain models take plain sampling only")
    if (body.n or 1) > 1:
        raise protocol.refuse("n", "VisionPlain models generate one sequence per request")


def _choice(index: int, seq: Finished, parser: str | None, parallel: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": seq.text, "refusal": None}
    finish = seq.finish_reason
    if parser is not None:
        parsed = tool_parsers.parse(parser, seq.text)
        if parsed.calls:
            calls = parsed.calls if parallel else parsed.calls[:1]
            message["content"] = parsed.content
            message["tool_calls"] = [c.to_openai() for c in calls]
            if finish == "stop":
                finish = "tool_calls"
    return {"index": index, "message": message, "logprobs": chat_logprobs(seq.logprobs), "finish_reason": finish}


async def _sse(ctx: RuntimeContext, rid: str, stream: AsyncIterator[TokenEvent], prompt_len: int,
               params: SamplingParams, parser: str | None, include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())
    served = ctx.served

    def chunk(index: int, delta: dict[str, Any], finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": served,
                                   "system_fingerprint": None,
                                   "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                                "finish_reason": finish}]}
        if include_usage:
            payload["usage"] = None
        return payload

    fast = parser is None and params.logprobs is None
    frames = [ChunkFrames(chunk(i, {"content": ChunkFrames.TEXT}, ChunkFrames.FINISH)) for i in range(params.n)] if fast else []
    parsers = [tool_parsers.StreamParser(parser) for _ in range(params.n)] if parser else []
    completion = 0
    for i in range(params.n):
        yield sse_event(chunk(i, {"role": "assistant", "content": "", "refusal": None}, None))
    async for ev in stream:
        if ev.error:
            yield sse_event(error_body(f"generation failed: {ev.error}", type="internal_error"))
            break
        if fast:
            if ev.text:
                yield frames[ev.index].frame(ev.text)
        else:
            for delta in _deltas(parsers[ev.index] if parsers else None, ev):
                yield sse_event(chunk(ev.index, delta, None, chat_logprobs(ev.logprobs) if "content" in delta else None))
                ev.logprobs = None  # sent with the first delta of this event
        if ev.finish_reason is not None:
            completion += ev.completion_tokens
            calls = parsers and parsers[ev.index].calls
            finish = "tool_calls" if calls and ev.finish_reason == "stop" else ev.finish_reason
            yield sse_event(chunk(ev.index, {}, finish))
    if include_usage:
        yield sse_event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": served,
                         "system_fingerprint": None, "choices": [], "usage": usage(prompt_len, completion)})
    yield DONE


def _deltas(parser: tool_parsers.StreamParser | None, ev: TokenEvent) -> list[dict[str, Any]]:
    """The chunk deltas of one event: content and tool-call pieces, in order."""
    if parser is None:
        return [{"content": ev.text}] if ev.text or ev.logprobs else []
    pieces = parser.feed(ev.text)
    if ev.finish_reason is not None:
        pieces += parser.finish()
    out: list[dict[str, Any]] = []
    for p in pieces:
        if p.content:
            out.append({"content": p.content})
        elif p.name is not None:
            out.append({"tool_calls": [{"index": p.index, "id": p.id, "type": "function",
                                        "function": {"name": p.name, "arguments": ""}}]})
        elif p.arguments:
            out.append({"tool_calls": [{"index": p.index, "function": {"arguments": p.arguments}}]})
    if ev.logprobs and not any("content" in d for d in out):
        out.insert(0, {"content": ""})
    return out

