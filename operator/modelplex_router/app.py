"""The router's HTTP app: OpenAI-compatible endpoints in front of many models, plus model management."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplex_router.answer import SafeJSONResponse
from modelplex_router.apis.routes import add_api_routes, errors_for
from modelplex_router.auth import KeysFileError, Principal, visible
from modelplex_router.backend import ModelBackend, Prestarting
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.errors import BadRequest, ModelNotFound, RouterError, StatusError
from modelplex_router.guard import AccessGuard, audit
from modelplex_router.key_source import KeySource
from modelplex_router.metrics import RouterMetrics
from modelplex_router.pipeline import PassthroughApi, Pipeline
from modelplex_router.proxy import Forwarder
from modelplex_router.request_body import check_json_content_type, parse_json_object
from modelplex_router.router import CatalogSource, ModelRouter
from modelplex_router.settings import RouterSettings
from modelplex_router.upstream import UpstreamClients
from modelplex_spec import ModelplexConfig, load_config_file

log = logging.getLogger("modelplex_router")

# Paths forwarded to the model named in the body, as the runtime serves them.
PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize")


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

    # Errors the handlers do not answer themselves, in the shape of the API the path belongs to.
    @app.exception_handler(RouterError)
    async def _router_error(request: Request, exc: RouterError) -> JSONResponse:
        return errors_for(request.url.path).response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        err = StatusError(exc.status_code, str(exc.detail), error_type="invalid_request_error", code=code)
        return errors_for(request.url.path).response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = StatusError(400, str(exc.errors()), code="invalid_request")
        return errors_for(request.url.path).response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        err = StatusError(500, "internal error in the router", code="internal_error")
        return errors_for(request.url.path).response(err)

    pipeline = Pipeline(guard, forwarder, metrics, resolve_for)
    passthrough = PassthroughApi()
    app.state.response_store = add_api_routes(app, pipeline, settings)

    async def proxy(request: Request) -> Response:
        return await pipeline.handle(request, passthrough)

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
            card["replicas"] = replica_counts(coord)
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


def replica_counts(coord: ModelCoordinator) -> dict[str, int]:
    """``{"desired", "ready"}``: replicas asked for and ready."""
    replicas = coord.replicas()
    return {"desired": replicas.desired, "ready": len(replicas.ready)}
