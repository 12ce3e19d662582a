"""POST /v1/embeddings: vectors for one or more texts, float or base64, optionally shortened (Matryoshka).

The wait is bounded (``--embedding-timeout-seconds``: 504 past it) and a client that leaves cancels its
job, which the engine then skips: abandoned inputs are never computed (``embedding_inputs_total`` counts
the texts actually embedded, ``cancelled_requests_total`` the jobs dropped).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.api.generation import ClientDisconnected, until_disconnect
from modelplex_runtime.bodies import JSONBodyRoute
from modelplex_runtime.engine_api import Engine, ModelInfo
from modelplex_runtime.errors import APIError, bad_request
from modelplex_runtime.protocol import RequestBody, refuse

MAX_INPUTS = 2048


class EmbeddingRequest(RequestBody):
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1)


def texts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise bad_request("input must not be empty", param="input")
    if not all(isinstance(t, str) for t in texts):
        raise refuse("input", "token-id inputs are not supported; send text")
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"{len(texts)} inputs given; at most {MAX_INPUTS} per request", param="input")
    return texts  # type: ignore[return-value]


def check_dimensions(dimensions: int | None, info: ModelInfo, served: str) -> int | None:
    """The size to truncate to (None: the model's own), or a 400 when the model cannot give it."""
    if dimensions is None:
        return None
    size = info.extra.get("embedding_size")
    if dimensions == size:
        return None
    allowed = info.embedding_dimensions
    if allowed is None:
        raise refuse("dimensions", f"model {served!r} was not trained for shortened (Matryoshka) embeddings; "
                     f"its vectors have {size} dimensions (config.json sets no is_matryoshka)")
    if (size is not None and dimensions > size) or (allowed and dimensions not in allowed):
        shown = ", ".join(str(d) for d in allowed) if allowed else f"1 to {size}"
        raise bad_request(f"dimensions={dimensions} is not offered by model {served!r} ({shown})", param="dimensions")
    return dimensions


def router(ctx: RuntimeContext) -> APIRouter:
    api = APIRouter(route_class=JSONBodyRoute)

    @api.post("/v1/embeddings", response_model=None)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        engine = ctx.engine_for(body.model, ("Embedding",), "embeddings")
        texts = texts_of(body.input)
        dimensions = check_dimensions(body.dimensions, engine.info, ctx.served)
        ticket = ctx.gate.admit(1)
        try:
            lengths = await asyncio.to_thread(lambda: [len(engine.tokenize_text(t, True)) for t in texts])
            limit = engine.info.max_model_len
            for i, n in enumerate(lengths):
                if n > limit:
                    raise bad_request(f"input[{i}] is {n} tokens but this model's context is {limit} tokens",
                                      param="input", code="context_length_exceeded")
            try:
                vectors = await until_disconnect(request, _embed(ctx, engine, texts, dimensions))
            except ClientDisconnected:
                return Response(status_code=499)
        finally:
            ticket.release()
        ctx.metrics.prompt_tokens.inc(sum(lengths))
        fmt = body.encoding_format or "float"
        data = [{"object": "embedding", "index": i,
                 "embedding": vec if fmt == "float" else base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()}
                for i, vec in enumerate(vectors)]
        total = sum(lengths)
        return {"object": "list", "data": data, "model": ctx.served,
                "usage": {"prompt_tokens": total, "total_tokens": total}}

    return api


async def _embed(ctx: RuntimeContext, engine: Engine, texts: list[str], dimensions: int | None) -> list[list[float]]:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    metrics = ctx.metrics

    def done(result: Any) -> None:
        if not isinstance(result, BaseException):
            metrics.embedding_inputs.inc(len(texts))  # counted when computed, whether or not the client stayed
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    handle = engine.embed(texts, done, dimensions)
    try:
        result = await asyncio.wait_for(fut, ctx.settings.embedding_timeout_seconds)
    except TimeoutError:
        handle.cancel()
        metrics.cancelled.inc()
        raise APIError(504, f"the embedding did not finish within {ctx.settings.embedding_timeout_seconds:g} s",
                       type="timeout_error", code="timeout") from None
    except asyncio.CancelledError:
        handle.cancel()
        metrics.cancelled.inc()
        raise
    if isinstance(result, BaseException):
        raise APIError(500, f"embedding failed: {result}", type="internal_error")
    return result
