"""The HTTP API: OpenAI-compatible endpoints over one model, plus health, readiness and metrics.

The app never imports torch: the engine is built by ``deps.load_engine`` on a background thread after
the server is listening, so /health answers at once and /ready turns 200 when weights are loaded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplex_runtime import images, protocol
from modelplex_runtime.engine_api import Engine, EngineOptions, SamplingParams, TokenEvent
from modelplex_runtime.errors import APIError, bad_request, error_body, format_validation_errors, not_ready
from modelplex_runtime.lifecycle import ModelState, Phase
from modelplex_runtime.metrics import RuntimeMetrics
from modelplex_runtime.middleware import BodyTooLarge, RequestMiddleware
from modelplex_runtime.pump import EventPump
from modelplex_runtime.settings import RuntimeSettings
from modelplex_runtime.sse import DONE, ChunkFrames, sse_event
from modelplex_spec import ModelEntry

log = logging.getLogger("modelplex_runtime")

EngineLoader = Callable[[ModelEntry, EngineOptions], Engine]


def _default_loader(entry: ModelEntry, options: EngineOptions) -> Engine:
    from modelplex_runtime.engine.loader import load_engine  # torch is imported here, off the startup path

    return load_engine(entry, options)


@dataclass
class RuntimeDeps:
    load_engine: EngineLoader = _default_loader
    on_fatal: Callable[[str], None] = field(default=lambda reason: None)


class ClientDisconnected(Exception):
    pass


def create_app(settings: RuntimeSettings, entry: ModelEntry, deps: RuntimeDeps | None = None) -> FastAPI:
    deps = deps or RuntimeDeps()
    served = settings.served_name(entry)
    kind = entry.kind.value
    metrics = RuntimeMetrics()
    state = ModelState()
    created = int(time.time())

    def load_in_background() -> None:
        started = time.perf_counter()
        log.info("loading model", extra={"model": served, "kind": kind})
        try:
            options = EngineOptions(
                device=settings.device, max_batch_size=settings.max_batch_size, cpu_threads=settings.cpu_threads,
                on_step=metrics.batch_size.observe,
            )
            engine = deps.load_engine(entry, options)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            reason = " ".join(reason.split())  # one line for supervisors and log scrapers
            state.set_failed(reason)
            log.exception("model load failed", extra={"model": served})
            print(f"modelplex-runtime: failed to load model {served!r}: {reason}", file=sys.stderr, flush=True)
            deps.on_fatal(reason)
            return
        seconds = time.perf_counter() - started
        metrics.load_seconds.set(seconds)
        metrics.track_engine(engine.queue_depth, engine.running)
        state.set_ready(engine, seconds)
        metrics.ready.set(1)
        info = engine.info
        log.info("model ready", extra={"model": served, "load_seconds": round(seconds, 3), "device": info.device,
                                       "dtype": info.dtype, "max_model_len": info.max_model_len})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load_in_background, name="model-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.shutdown()

    app = FastAPI(title="modelplex runtime", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.model_state = state
    app.state.metrics = metrics
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    # ---- errors: always OpenAI-shaped, never a stack trace ----
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = format_validation_errors(list(exc.errors()))
        return JSONResponse(error_body(message, type="invalid_request_error", param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(msg, type="invalid_request_error", code=str(exc.status_code)), status_code=exc.status_code)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(
            error_body(f"request body exceeds the limit of {settings.max_body_bytes} bytes",
                       type="invalid_request_error", code="request_too_large"),
            status_code=413,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("state", {}).get("request_id", "")
        log.exception("unhandled error", extra={"request_id": rid})
        return JSONResponse(error_body(f"internal error (request id {rid})", type="internal_error"), status_code=500)

    # ---- helpers ----
    pumps: dict[asyncio.AbstractEventLoop, EventPump] = {}

    def pump_for_loop() -> EventPump:
        loop = asyncio.get_running_loop()
        if loop not in pumps:
            pumps.clear()  # one loop per server; a new one (tests) replaces the old
            pumps[loop] = EventPump(loop, settings.stream_interval_ms / 1000)
        return pumps[loop]

    def engine_for(requested: str | None, wanted_kinds: tuple[str, ...], what: str) -> Engine:
        protocol.resolve_model_name(requested, served, entry.pipeline_name)
        if kind not in wanted_kinds:
            raise bad_request(
                f"model {served!r} is a {kind} model and does not serve {what}; "
                f"{what} needs a {' or '.join(wanted_kinds)} model",
                param="model",
                code="wrong_model_kind",
            )
        if state.phase is Phase.FAILED:
            raise not_ready(f"model {served!r} failed to load: {state.error}")
        if state.engine is None:
            raise not_ready(f"model {served!r} is still loading")
        return state.engine

    async def events(
        engine: Engine, prompt_ids: list[int], params: SamplingParams, whole: bool = False
    ) -> AsyncIterator[TokenEvent]:
        """The generation's events on the event loop; ``whole`` (a non-streamed response) gathers the
        text on the engine's thread and wakes the loop once, at the end, instead of once per token."""
        pump = pump_for_loop()
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        arrived = time.perf_counter()
        first_at: float | None = None
        parts: list[str] = []

        def on_token(ev: TokenEvent) -> None:
            nonlocal first_at
            first = first_at is None
            if first and ev.completion_tokens > 0:
                first_at = time.perf_counter()
            if not whole:
                # The first text (tokens held back for a stop string or an incomplete character come
                # with it) and the finish go at once; the events between may wait for the interval.
                pump.post(queue, ev, urgent=first or ev.finish_reason is not None)
                return
            parts.append(ev.text)
            if ev.finish_reason is not None:
                pump.post(queue, TokenEvent("".join(parts), ev.completion_tokens, ev.finish_reason, ev.error), urgent=True)

        handle = engine.generate(prompt_ids, params, on_token)
        metrics.prompt_tokens.inc(len(prompt_ids))
        finished = False
        ttft_observed = False
        try:
            while True:
                ev = await queue.get()
                # Tokens that queued up while the loop was busy go out as one chunk: fewer frames to
                # write (and for the client to parse) exactly when the server is behind.
                while not queue.empty() and ev.finish_reason is None:
                    ev = _merge_events(ev, queue.get_nowait())
                if not ttft_observed and first_at is not None:
                    ttft_observed = True
                    metrics.ttft.observe(first_at - arrived)
                if ev.finish_reason is not None:
                    finished = True
                    now = time.perf_counter()
                    metrics.generation_tokens.inc(ev.completion_tokens)
                    metrics.e2e.observe(now - arrived)
                    if first_at is not None and ev.completion_tokens > 1:
                        metrics.tpot.observe((now - first_at) / (ev.completion_tokens - 1))
                yield ev
                if finished:
                    return
        finally:
            if not finished:
                handle.cancel()
                metrics.cancelled.inc()

    async def collect(request: Request, stream: AsyncIterator[TokenEvent]) -> tuple[str, TokenEvent]:
        """Run a generation to the end, cancelling it if the client goes away."""

        async def consume() -> tuple[str, TokenEvent]:
            parts: list[str] = []
            last = TokenEvent(text="", completion_tokens=0)
            async for ev in stream:
                parts.append(ev.text)
                last = ev
            return "".join(parts), last

        async def disconnected() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return

        work = asyncio.ensure_future(consume())
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise ClientDisconnected()
        return work.result()

    def raise_engine_error(ev: TokenEvent) -> None:
        if ev.error:
            raise APIError(500, f"generation failed: {ev.error}", type="internal_error")

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def prepare_chat(body: protocol.ChatCompletionRequest) -> tuple[Engine, list[int], SamplingParams]:
        engine = engine_for(body.model, ("Plain", "GGUF", "VisionPlain"), "chat completions")
        protocol.validate_content_parts(body.messages)
        if protocol.image_parts(body.messages) and kind != "VisionPlain":
            raise bad_request(f"model {served!r} is a {kind} model and does not accept images", param="messages")
        messages = protocol.message_dicts(body.messages)
        if kind == "VisionPlain":
            parts = protocol.image_parts(body.messages)
            limit = getattr(entry.selector, "max_num_images", None)
            if limit is not None and len(parts) > limit:
                raise bad_request(f"{len(parts)} images given; model {served!r} accepts at most {limit}", param="messages")
            max_edge = getattr(entry.selector, "max_edge", None)
            pil = await asyncio.to_thread(
                lambda: [images.load_image(images.fetch_image_bytes(images.image_url_of(p), settings.allow_remote_images),
                                           max_edge) for p in parts])
            prompt_ids = await asyncio.to_thread(engine.tokenize_chat, messages, True, pil)  # type: ignore[call-arg]
        else:
            prompt_ids = await asyncio.to_thread(engine.tokenize_chat, messages, True)
        max_tokens = body.max_completion_tokens or body.max_tokens
        n = protocol.check_context(len(prompt_ids), max_tokens, engine.info.max_model_len)
        return engine, prompt_ids, protocol.sampling_params(body, n)

    # ---- routes ----
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "phase": state.phase.value}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if state.phase is Phase.READY and state.engine is not None:
            info = state.engine.info
            return JSONResponse({"status": "ready", "model": served, "kind": kind, "device": info.device,
                                 "dtype": info.dtype, "max_model_len": info.max_model_len,
                                 "load_seconds": state.load_seconds, "quantization": info.quantization,
                                 **{k: v for k, v in info.extra.items() if k in ("param_bytes", "pooling")}})
        if state.phase is Phase.FAILED:
            err = not_ready(f"model {served!r} failed to load: {state.error}")
        else:
            err = not_ready(f"model {served!r} is still loading")
        return JSONResponse(err.body(), status_code=503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card: dict[str, Any] = {"id": served, "object": "model", "created": created, "owned_by": "modelplex", "kind": kind}
        card["max_model_len"] = state.engine.info.max_model_len if state.engine is not None else entry.max_seq_len
        card["ready"] = state.phase is Phase.READY
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: protocol.ChatCompletionRequest, request: Request) -> Any:
        engine, prompt_ids, params = await prepare_chat(body)
        rid = "chatcmpl-" + uuid.uuid4().hex
        stream = events(engine, prompt_ids, params, whole=not body.stream)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(chat_sse(rid, stream, len(prompt_ids), include_usage), media_type="text/event-stream")
        try:
            text, last = await collect(request, stream)
        except ClientDisconnected:
            return Response(status_code=499)
        raise_engine_error(last)
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": last.finish_reason}],
            "usage": usage(len(prompt_ids), last.completion_tokens),
        }

    async def chat_sse(rid: str, stream: AsyncIterator[TokenEvent], prompt_len: int, include_usage: bool) -> AsyncIterator[bytes]:
        created_at = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            payload: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": served,
                                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                payload["usage"] = None
            return payload

        content = ChunkFrames(chunk({"content": ChunkFrames.TEXT}, ChunkFrames.FINISH))
        yield sse_event(chunk({"role": "assistant", "content": ""}, None))
        async for ev in stream:
            if ev.error:
                yield sse_event(error_body(f"generation failed: {ev.error}", type="internal_error"))
                break
            if ev.text:
                yield content.frame(ev.text)
            if ev.finish_reason is not None:
                yield sse_event(chunk({}, ev.finish_reason))
                if include_usage:
                    yield sse_event({"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": served,
                                     "choices": [], "usage": usage(prompt_len, ev.completion_tokens)})
        yield DONE

    @app.post("/v1/completions", response_model=None)
    async def completions(body: protocol.CompletionRequest, request: Request) -> Any:
        engine = engine_for(body.model, ("Plain", "GGUF"), "text completions")
        prompt = protocol.completion_prompt(body.prompt)
        if isinstance(prompt, str):
            prompt_ids = await asyncio.to_thread(engine.tokenize_text, prompt, True)
        else:
            try:  # out-of-vocabulary ids would fail the whole batch's forward
                await asyncio.to_thread(engine.detokenize, prompt, False)
            except ValueError as exc:
                raise bad_request(str(exc), param="prompt") from exc
            prompt_ids = prompt
        limit = engine.info.max_model_len
        if body.max_tokens is None:  # OpenAI's default for completions is 16 tokens
            n = min(16, protocol.check_context(len(prompt_ids), None, limit))
        else:
            n = protocol.check_context(len(prompt_ids), body.max_tokens, limit)
        params = protocol.sampling_params(body, n)
        rid = "cmpl-" + uuid.uuid4().hex
        stream = events(engine, prompt_ids, params, whole=not body.stream)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(completion_sse(rid, stream, len(prompt_ids), include_usage), media_type="text/event-stream")
        try:
            text, last = await collect(request, stream)
        except ClientDisconnected:
            return Response(status_code=499)
        raise_engine_error(last)
        if body.echo and isinstance(prompt, str):
            text = prompt + text
        return {
            "id": rid, "object": "text_completion", "created": int(time.time()), "model": served,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}],
            "usage": usage(len(prompt_ids), last.completion_tokens),
        }

    async def completion_sse(rid: str, stream: AsyncIterator[TokenEvent], prompt_len: int, include_usage: bool) -> AsyncIterator[bytes]:
        created_at = int(time.time())
        payload: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created_at, "model": served,
                                   "choices": [{"index": 0, "text": ChunkFrames.TEXT, "logprobs": None,
                                                "finish_reason": ChunkFrames.FINISH}]}
        if include_usage:
            payload["usage"] = None
        frames = ChunkFrames(payload)
        async for ev in stream:
            if ev.error:
                yield sse_event(error_body(f"generation failed: {ev.error}", type="internal_error"))
                break
            if ev.text or ev.finish_reason is not None:
                yield frames.frame(ev.text, ev.finish_reason)
            if ev.finish_reason is not None and include_usage:
                yield sse_event({"id": rid, "object": "text_completion", "created": created_at, "model": served,
                                 "choices": [], "usage": usage(prompt_len, ev.completion_tokens)})
        yield DONE

    @app.post("/v1/embeddings")
    async def embeddings(body: protocol.EmbeddingRequest) -> dict[str, Any]:
        engine = engine_for(body.model, ("Embedding",), "embeddings")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise bad_request("input must not be empty", param="input")
        if body.dimensions is not None:
            raise bad_request("dimensions is not supported: this model has a fixed output size", param="dimensions")
        lengths = await asyncio.to_thread(lambda: [len(engine.tokenize_text(t, True)) for t in texts])
        limit = engine.info.max_model_len
        for i, n in enumerate(lengths):
            if n > limit:
                raise bad_request(f"input[{i}] is {n} tokens but this model's context is {limit} tokens",
                                  param="input", code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

        engine.embed(texts, done)
        result = await fut
        if isinstance(result, BaseException):
            raise APIError(500, f"embedding failed: {result}", type="internal_error")
        metrics.embedding_inputs.inc(len(texts))
        metrics.prompt_tokens.inc(sum(lengths))
        fmt = body.encoding_format or "float"
        data = [{"object": "embedding", "index": i,
                 "embedding": vec if fmt == "float" else base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()}
                for i, vec in enumerate(result)]
        total = sum(lengths)
        return {"object": "list", "data": data, "model": served, "usage": {"prompt_tokens": total, "total_tokens": total}}

    @app.post("/tokenize")
    async def tokenize(body: protocol.TokenizeRequest) -> dict[str, Any]:
        engine = engine_for(body.model, (kind,), "tokenization")
        if body.messages is not None:
            if kind == "Embedding":
                raise bad_request(f"model {served!r} is an Embedding model and has no chat template", param="messages")
            ids = await asyncio.to_thread(engine.tokenize_chat, protocol.message_dicts(body.messages), body.add_generation_prompt)
        else:
            text = body.text if body.text is not None else body.prompt
            if text is None:
                raise bad_request("give text, prompt or messages", param="text")
            ids = await asyncio.to_thread(engine.tokenize_text, text, body.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.info.max_model_len}

    @app.post("/detokenize")
    async def detokenize(body: protocol.DetokenizeRequest) -> dict[str, str]:
        engine = engine_for(body.model, (kind,), "detokenization")
        try:
            text = await asyncio.to_thread(engine.detokenize, body.tokens, body.skip_special_tokens)
        except (ValueError, OverflowError, IndexError, TypeError) as exc:
            raise bad_request(f"cannot detokenize these ids: {exc}", param="tokens") from exc
        return {"text": text}

    return app


def _merge_events(first: TokenEvent, then: TokenEvent) -> TokenEvent:
    return TokenEvent(first.text + then.text, then.completion_tokens, then.finish_reason, then.error)
