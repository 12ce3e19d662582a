"""The HTTP app: builds the shared context, loads the model in the background and mounts the endpoint
families (``api/``: chat, completions, embeddings, tokenize, service).

The app never imports torch: the engine is built by ``deps.load_engine`` on a background thread after
the server is listening, so /health answers at once and /ready turns 200 when weights are loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplex_runtime.api import chat, completions, embeddings, service, tokenize
from modelplex_runtime.api.context import RuntimeContext
from modelplex_runtime.engine_api import Engine, EngineOptions
from modelplex_runtime.errors import APIError, error_body, format_validation_errors
from modelplex_runtime.failure import report_failure
from modelplex_runtime.middleware import BodyTooLarge, RequestMiddleware
from modelplex_runtime.settings import RuntimeSettings
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


def create_app(settings: RuntimeSettings, entry: ModelEntry, deps: RuntimeDeps | None = None) -> FastAPI:
    deps = deps or RuntimeDeps()
    ctx = RuntimeContext(settings, entry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=_load_in_background, args=(ctx, deps), name="model-load", daemon=True).start()
        yield
        if ctx.state.engine is not None:
            ctx.state.engine.shutdown()

    app = FastAPI(title="modelplex runtime", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.model_state = ctx.state
    app.state.metrics = ctx.metrics
    app.add_middleware(RequestMiddleware, metrics=ctx.metrics, max_body_bytes=settings.max_body_bytes)
    _error_handlers(app, settings)
    for family in (service, chat, completions, embeddings, tokenize):
        app.include_router(family.router(ctx))
    return app


def _load_in_background(ctx: RuntimeContext, deps: RuntimeDeps) -> None:
    settings, served, kind = ctx.settings, ctx.served, ctx.kind
    started = time.perf_counter()
    log.info("loading model", extra={"model": served, "kind": kind})
    try:
        options = EngineOptions(
            device=settings.device, max_batch_size=settings.max_batch_size, cpu_threads=settings.cpu_threads,
            kv_cache_bytes=int(settings.kv_cache_gib * 2**30) if settings.kv_cache_gib else None,
            max_step_tokens=settings.max_step_tokens, batch_path=settings.batch_path,
            cpu_linear=settings.cpu_linear,
            on_step=ctx.metrics.batch_size.observe, stall_seconds=settings.engine_stall_seconds,
        )
        engine = deps.load_engine(ctx.entry, options)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        reason = " ".join(reason.split())  # one line for supervisors and log scrapers
        ctx.state.set_failed(reason)
        log.exception("model load failed", extra={"model": served})
        report_failure("load", reason)
        deps.on_fatal(reason)
        return
    seconds = time.perf_counter() - started
    ctx.metrics.load_seconds.set(seconds)
    ctx.metrics.track_engine(engine.queue_depth, engine.running, engine.batch_stats)
    ctx.state.set_ready(engine, seconds)
    ctx.metrics.ready.set(1)
    info = engine.info
    log.info("model ready", extra={"model": served, "load_seconds": round(seconds, 3), "device": info.device,
                                   "dtype": info.dtype, "max_model_len": info.max_model_len,
                                   "tool_call_parser": info.tool_call_parser})


def _error_handlers(app: FastAPI, settings: RuntimeSettings) -> None:
    """Errors are always OpenAI-shaped, never a stack trace."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = format_validation_errors(list(exc.errors()))
        return JSONResponse(error_body(message, type="invalid_request_error", param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(msg, type="invalid_request_error", code=str(exc.status_code)),
                            status_code=exc.status_code)

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
