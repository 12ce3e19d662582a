"""The router's HTTP app: OpenAI-compatible endpoints in front of many models, plus model management."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplex_router.auth import KeysFileError, Principal, visible
from modelplex_router.backend import ModelBackend, Prestarting
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.endpoint import Endpoint
from modelplex_router.errors import BadRequest, ModelNotFound, RouterError, UpstreamError, error_body
from modelplex_router.guard import AccessGuard, audit
from modelplex_router.key_source import KeySource
from modelplex_router.limits import Admission
from modelplex_router.metrics import RouterMetrics
from modelplex_router.proxy import Forwarder
from modelplex_router.request_body import (
    check_json_content_type,
    check_routing_fields,
    encode_json,
    parse_json_object,
)
from modelplex_router.router import CatalogSource, ModelRouter
from modelplex_router.settings import RouterSettings
from modelplex_router.upstream import UpstreamClients
from modelplex_spec import ModelplexConfig, load_config_file

access_log = logging.getLogger("modelplex_router.access")
log = logging.getLogger("modelplex_router")

# Paths forwarded to the model named in the body, as the runtime serves them.
PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that echoes what a client sent (a model id,
    a field) renders even when that holds text UTF-8 cannot encode, such as a lone surrogate."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def _error_response(err: RouterError) -> JSONResponse:
    return SafeJSONResponse(err.body(), status_code=err.status_code, headers=err.headers)


def _json_body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_MODEL_ID_BODY = _json_body({"model_id": {"type": "string"}}, ["model_id"])


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
    keys = KeySource(
        settings.api_keys_file,
        settings.api_key.get_secret_value() if settings.api_key else None,
        settings.keys_check_interval,
    )
    if keys.ring.open:
        if settings.require_api_keys:
            raise KeysFileError("API keys are required (--require-api-keys) but none are configured")
        log.warning(
            "NO API KEYS CONFIGURED: anyone who reaches this router can use and unload every model; "
            "set MODELPLEX_ROUTER_API_KEYS_FILE or MODELPLEX_ROUTER_API_KEY (see docs/security.md)"
        )
    guard = AccessGuard(settings, keys)
    metrics = RouterMetrics()
    router = ModelRouter(config, backend, settings, metrics, catalog_source)
    clients = UpstreamClients(
        settings.upstream_lanes, settings.upstream_max_connections, settings.upstream_connect_timeout
    )
    forwarder = Forwarder(clients, settings.loading_comment_interval, settings.stall_timeout_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("router serving %s (default %s)", ", ".join(router.catalog.ids), router.default_id)
        if isinstance(backend, Prestarting):
            metrics.track_spares(lambda: backend.spare_count)
            await backend.start()
        await router.start()
        try:
            yield
        finally:
            await router.stop()
            await backend.close()
            await clients.aclose()

    app = FastAPI(
        title="modelplex router",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.router = router
    app.state.metrics = metrics
    app.state.backend = backend
    app.state.guard = guard

    def hidden_or_unknown(principal: Principal, requested: object) -> ModelNotFound:
        """The same 404 for a model that does not exist and one the key may not see: names do not leak."""
        ids = ["default"] if principal.can_use(router.default_id) else []
        ids += visible(principal, router.catalog.ids)
        return ModelNotFound(
            f"The model {requested!r} does not exist. Available models: {', '.join(ids) or '(none)'}"
        )

    def resolve_for(principal: Principal, requested: object) -> ModelCoordinator:
        try:
            coord = router.resolve(requested)
        except ModelNotFound:
            raise hidden_or_unknown(principal, requested) from None
        if not principal.can_use(coord.api_id):
            raise hidden_or_unknown(principal, requested)
        return coord

    def lookup_for(principal: Principal, model_id: str) -> ModelCoordinator | None:
        coord = router.lookup(model_id)
        return coord if coord is not None and principal.can_use(coord.api_id) else None

    @app.exception_handler(RouterError)
    async def _router_error(_request: Request, exc: RouterError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return SafeJSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse(
            error_body(str(exc.errors()), "invalid_request_error", "invalid_request"), status_code=400
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return SafeJSONResponse(
            error_body("internal error in the router", "server_error", "internal_error"), status_code=500
        )

    async def proxy(request: Request) -> Response:
        path = request.url.path
        started = time.perf_counter()
        model_label = "unknown"
        admission: Admission | None = None

        def finish(code: int) -> None:
            if admission is not None:
                admission.release()
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
            principal = guard.principal(request)
            check_json_content_type(request.headers.get("content-type"))
            payload = parse_json_object(body := await guard.read_body(request))
            check_routing_fields(payload)
            coord = resolve_for(principal, payload.get("model"))
            model_label = coord.api_id
            admission = guard.admit(principal, coord.api_id, payload)
            # The runtime serves the model under its API id; re-serialise only when the name differs.
            if payload.get("model") != coord.api_id:
                payload["model"] = coord.api_id
                body = encode_json(payload)
            endpoint = coord.try_acquire()
            if endpoint is None and payload.get("stream") is True:
                coord.check_can_wait()  # a 429 (or a back-off's 503) must come before any byte of the stream
                return forwarder.held_stream(coord, path, body, finish)

            async def serve(endpoint: Endpoint | None) -> Response:
                if endpoint is None:
                    endpoint = await coord.acquire()
                try:
                    return await forwarder.forward(coord, endpoint, path, body, finish)
                except UpstreamError as err:
                    if not err.retryable:
                        raise
                    # The runtime died before the monitor noticed: load it again, as for an unloaded model.
                    endpoint = await coord.acquire()
                    return await forwarder.forward(coord, endpoint, path, body, finish)

            if payload.get("stream") is True:
                return await serve(endpoint)  # a stream's response watches for the client itself
            response = await until_client_leaves(request, serve(endpoint))
            if response is None:
                finish(499)
                return Response(status_code=499)
            return response
        except RouterError as err:
            finish(err.status_code)
            return _error_response(err)
        except BaseException:
            if admission is not None:
                admission.release()
            raise

    for proxied in PROXIED_PATHS:
        # In the schema (for clients and fuzzers) as "a JSON object naming a model"; the runtime
        # validates the rest.
        app.add_api_route(
            proxied, proxy, methods=["POST"], openapi_extra=_json_body({"model": {"type": "string"}})
        )

    def _model_card(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": router.created, "owned_by": "local"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        principal = guard.principal(request)
        data = [_model_card("default")] if principal.can_use(router.default_id) else []
        for coord in router.coordinators.values():
            if not principal.can_use(coord.api_id):
                continue
            card = _model_card(coord.api_id)
            card["status"] = coord.status
            card.update(_failure_fields(coord))
            data.append(card)
        return {"object": "list", "data": data}

    async def _management_target(request: Request) -> tuple[Principal, str, ModelCoordinator | None]:
        principal = guard.principal(request)
        body = await guard.read_body(request)
        if body.strip():
            check_json_content_type(request.headers.get("content-type"))
        payload = parse_json_object(body, empty_ok=True)
        model_id = payload.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest('the request body needs "model_id": an id, alias or "default"', param="model_id")
        return principal, model_id, lookup_for(principal, model_id)

    def _status_reply(model_id: str, status: str, error: str | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = {"model_id": model_id, "status": status}
        if error:
            reply["error"] = error
        return reply

    def _failure_fields(coord: ModelCoordinator) -> dict[str, Any]:
        """A failed model's reason and, while it backs off, the seconds until it loads again by itself."""
        if coord.status != "failed" or not coord.error:
            return {}
        fields: dict[str, Any] = {"error": coord.error}
        retry_in = coord.retry_in()
        if retry_in is not None:
            fields["retry_after_seconds"] = retry_in
        return fields

    @app.post("/v1/models/status", openapi_extra=_MODEL_ID_BODY)
    async def model_status(request: Request) -> dict[str, Any]:
        _principal, model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        return {**_status_reply(model_id, coord.status), **_failure_fields(coord)}

    @app.post("/v1/models/unload", openapi_extra=_MODEL_ID_BODY)
    async def unload_model(request: Request) -> dict[str, Any]:
        principal, model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        guard.require_manage(principal, "unload", coord.api_id)
        try:
            status = await coord.unload(reason="request")
        except Exception as exc:
            log.exception("unloading %s failed", coord.api_id)
            audit(principal, "unload", coord.api_id, "internal_error")
            return _status_reply(model_id, "internal_error", f"{type(exc).__name__}: {exc}")
        audit(principal, "unload", coord.api_id, status)
        return _status_reply(model_id, status)

    @app.post("/v1/models/reload", openapi_extra=_MODEL_ID_BODY)
    async def reload_model(request: Request) -> dict[str, Any]:
        principal, model_id, coord = await _management_target(request)
        if coord is None:
            return _status_reply(model_id, "not_found")
        guard.require_manage(principal, "reload", coord.api_id)
        try:
            await coord.load()
        except RouterError as err:
            audit(principal, "reload", coord.api_id, "internal_error")
            return _status_reply(model_id, "internal_error", err.message)
        except Exception as exc:
            log.exception("reloading %s failed", coord.api_id)
            audit(principal, "reload", coord.api_id, "internal_error")
            return _status_reply(model_id, "internal_error", f"{type(exc).__name__}: {exc}")
        audit(principal, "reload", coord.api_id, coord.status)
        return _status_reply(model_id, coord.status)

    @app.get("/v1/models/default")
    async def get_default(request: Request) -> dict[str, Any]:
        principal = guard.principal(request)
        return {"model_id": router.default_id if principal.can_use(router.default_id) else None}

    @app.post("/v1/models/default", openapi_extra=_MODEL_ID_BODY)
    async def set_default(request: Request) -> dict[str, Any]:
        principal, model_id, coord = await _management_target(request)
        if coord is None:
            raise hidden_or_unknown(principal, model_id)
        guard.require_manage(principal, "set_default", coord.api_id)
        router.set_default(coord.api_id)
        audit(principal, "set_default", coord.api_id, "ok")
        return {"model_id": router.default_id}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        if not guard.ring.open:
            # Probes need no key, so with keys configured the model names stay out of this answer.
            return {"status": "ok"}
        return {"status": "ok", "models": {c.api_id: c.status for c in router.coordinators.values()}}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


async def until_client_leaves(request: Request, work: Coroutine[Any, Any, Response]) -> Response | None:
    """Run ``work`` (a non-streamed request: waiting for a load, then for the whole answer); None when
    the client disconnects first. ``work`` is then cancelled, which closes the upstream connection, so
    the runtime stops generating for nobody."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()
