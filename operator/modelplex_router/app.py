"""The router's HTTP app: OpenAI-compatible endpoints in front of many models, plus model management."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplex_router.backend import ModelBackend
from modelplex_router.errors import BadRequest, RouterError, UpstreamError, error_body
from modelplex_router.metrics import RouterMetrics
from modelplex_router.proxy import Forwarder
from modelplex_router.router import CatalogSource, ModelRouter
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelplexConfig, load_config_file

access_log = logging.getLogger("modelplex_router.access")
log = logging.getLogger("modelplex_router")

# Paths forwarded to the model named in the body, as the runtime serves them.
PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")


def _error_response(err: RouterError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers)


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        payload = json.loads(body) if body else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def create_app(
    settings: RouterSettings,
    backend: ModelBackend,
    config: ModelplexConfig | None = None,
    catalog_source: CatalogSource | None = None,
) -> FastAPI:
    """Build the app; ``config`` defaults to ``settings.config_file`` (ConfigError when invalid).

    With ``catalog_source`` (Kubernetes: the MultiModels) the models are re-read every
    ``settings.catalog_refresh_seconds`` and added, removed or changed while the router runs.
    """
    if config is None:
        if not settings.config_file:
            raise ValueError("no models: give a config or settings.config_file")
        config = load_config_file(settings.config_file, settings.default_model_id)
    metrics = RouterMetrics()
    router = ModelRouter(config, backend, settings, metrics, catalog_source)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=settings.upstream_connect_timeout, read=None, write=None, pool=None),
        limits=httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
        ),
        trust_env=False,
    )
    forwarder = Forwarder(client, settings.loading_comment_interval)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("router serving %s (default %s)", ", ".join(router.catalog.ids), router.default_id)
        await router.start()
        try:
            yield
        finally:
            await router.stop()
            await backend.close()
            await client.aclose()

    app = FastAPI(title="modelplex router", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.router = router
    app.state.metrics = metrics
    app.state.backend = backend

    @app.exception_handler(RouterError)
    async def _router_error(_request: Request, exc: RouterError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.errors()), "invalid_request_error", "invalid_request"), status_code=400
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(
            error_body("internal error in the router", "server_error", "internal_error"), status_code=500
        )

    async def proxy(request: Request) -> Response:
        path = request.url.path
        started = time.perf_counter()
        model_label = "unknown"

        def finish(code: int) -> None:
            elapsed = time.perf_counter() - started
            metrics.requests_total.labels(model=model_label, code=str(code)).inc()
            metrics.request_duration.labels(model=model_label).observe(elapsed)
            access_log.info(
                "%s %s %s %d %.3fs",
                request.method,
                path,
                model_label,
                code,
                elapsed,
                extra={"path": path, "model": model_label, "status": code, "duration_s": round(elapsed, 4)},
            )

        try:
            body = await request.body()
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"the request body is not valid JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise BadRequest("the request body must be a JSON object")
            coord = router.resolve(payload.get("model"))
            model_label = coord.api_id
            # The runtime serves the model under its API id; re-serialise only when the name differs.
            if payload.get("model") != coord.api_id:
                payload["model"] = coord.api_id
                body = json.dumps(payload).encode()
            url = coord.try_acquire()
            if url is None:
                if payload.get("stream") is True:
                    coord.check_can_wait()  # a 429 must come before any byte of the stream
                    return forwarder.held_stream(coord, path, body, finish)
                url = await coord.acquire()
            try:
                return await forwarder.forward(coord, url, path, body, finish)
            except UpstreamError as err:
                if not err.retryable:
                    raise
                # The runtime died before the monitor noticed: load it again, as for an unloaded model.
                url = await coord.acquire()
                return await forwarder.forward(coord, url, path, body, finish)
        except RouterError as err:
            finish(err.status_code)
            return _error_response(err)

    for proxied in PROXIED_PATHS:
        app.add_api_route(proxied, proxy, methods=["POST"], include_in_schema=False)

    def _model_card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": router.created, "owned_by": "local"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [_model_card("default")]
        for coord in router.coordinators.values():
            card = _model_card(coord.api_id)
            card["status"] = coord.status
            if coord.status == "failed" and coord.error:
                card["error"] = coord.error
            data.append(card)
        return {"object": "list", "data": data}

    async def _management_target(request: Request) -> tuple[str, Any]:
        payload = await _json_object(request)
        model_id = payload.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest('the request body needs "model_id": an id, alias or "default"')
        return model_id, router.lookup(model_id)

    def _status_reply(model_id: str, status: str, error: str | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = {"model_id": model_id, "status": status}
        if error:
            reply["error"] = error
        return reply

    @app.post("/v1/models/status")
    async def model_status(request: Request) -> dict[str, Any]:
        model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        return _status_reply(model_id, coord.status, coord.error if coord.status == "failed" else None)

    @app.post("/v1/models/unload")
    async def unload_model(request: Request) -> dict[str, Any]:
        model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        try:
            status = await coord.unload(reason="request")
        except Exception as exc:
            log.exception("unloading %s failed", coord.api_id)
            return _status_reply(model_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return _status_reply(model_id, status)

    @app.post("/v1/models/reload")
    async def reload_model(request: Request) -> dict[str, Any]:
        model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        try:
            await coord.load()
        except RouterError as err:
            return _status_reply(model_id, "internal_error", err.message)
        except Exception as exc:
            log.exception("reloading %s failed", coord.api_id)
            return _status_reply(model_id, "internal_error", f"{type(exc).__name__}: {exc}")
        return _status_reply(model_id, coord.status)

    @app.get("/v1/models/default")
    async def get_default() -> dict[str, Any]:
        return {"model_id": router.default_id}

    @app.post("/v1/models/default")
    async def set_default(request: Request) -> dict[str, Any]:
        model_id, coord = await _management_target(request)
        if coord is None:
            raise router.not_found(model_id)
        router.set_default(coord.api_id)
        return {"model_id": router.default_id}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": {c.api_id: c.status for c in router.coordinators.values()}}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
