"""The Responses and Messages API routes of the router app, and the error shape each path answers in."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from modelplex_router.answer import OPENAI_ERRORS, ErrorStyle, SafeJSONResponse
from modelplex_router.apis import messages_request, responses_request
from modelplex_router.apis.messages import CountTokensApi, MessagesApi
from modelplex_router.apis.messages_object import ANTHROPIC_ERRORS
from modelplex_router.apis.response_store import ResponseStore
from modelplex_router.apis.responses import ResponseNotFound, ResponsesApi
from modelplex_router.apis.responses_object import owner_of
from modelplex_router.errors import BadRequest, RouterError
from modelplex_router.pipeline import Pipeline
from modelplex_router.settings import RouterSettings

RESPONSE_PATH = "/v1/responses/{response_id}"


def errors_for(path: str) -> ErrorStyle:
    """Anthropic's error shape on the Messages API's paths, OpenAI's everywhere else."""
    return ANTHROPIC_ERRORS if path == "/v1/messages" or path.startswith("/v1/messages/") else OPENAI_ERRORS


def add_api_routes(app: FastAPI, pipeline: Pipeline, settings: RouterSettings) -> ResponseStore:
    """``/v1/responses`` (+ GET / DELETE by id) and ``/v1/messages`` (+ ``count_tokens``); returns the
    store of Responses answers."""
    store = ResponseStore(
        settings.responses_store_size, settings.responses_store_bytes, settings.responses_store_ttl_seconds
    )
    pipeline.metrics.track_response_store(lambda: len(store), lambda: store.bytes)
    responses = ResponsesApi(store)
    messages = MessagesApi()
    count_tokens = CountTokensApi()

    async def create_response(request: Request) -> Response:
        return await pipeline.handle(request, responses)

    async def create_message(request: Request) -> Response:
        return await pipeline.handle(request, messages)

    async def count_message_tokens(request: Request) -> Response:
        return await pipeline.handle(request, count_tokens)

    app.add_api_route(
        "/v1/responses", create_response, methods=["POST"], openapi_extra=responses_request.OPENAPI_BODY
    )
    app.add_api_route(
        "/v1/messages", create_message, methods=["POST"], openapi_extra=messages_request.OPENAPI_BODY
    )
    app.add_api_route(
        "/v1/messages/count_tokens",
        count_message_tokens,
        methods=["POST"],
        openapi_extra=messages_request.COUNT_OPENAPI_BODY,
    )

    def stored(request: Request, response_id: str) -> tuple[bytes, Any]:
        if request.query_params:
            names = ", ".join(sorted(request.query_params))
            raise BadRequest(f"query parameters are not supported here: {names}", param=names)
        owner = owner_of(pipeline.guard.principal(request))
        entry = store.get(owner, response_id)
        if entry is None:
            raise ResponseNotFound(
                f"Response with id {response_id!r} not found (answers are kept in this router's memory for "
                f"{settings.responses_store_ttl_seconds:g}s, per key, and not after a restart)"
            )
        return owner, entry

    async def stored_response(request: Request, response_id: str, delete: bool) -> Response:
        record = pipeline.recorder(request, RESPONSE_PATH)
        try:
            owner, entry = stored(request, response_id)
        except RouterError as err:
            record.finish(err.status_code)
            return OPENAI_ERRORS.response(err)
        record.model = entry.response["model"]
        record.finish(200)
        if not delete:
            return SafeJSONResponse(entry.response)
        store.delete(owner, response_id)
        return SafeJSONResponse({"id": response_id, "object": "response", "deleted": True})

    @app.get(RESPONSE_PATH)
    async def get_response(request: Request, response_id: str) -> Response:
        return await stored_response(request, response_id, delete=False)

    @app.delete(RESPONSE_PATH)
    async def delete_response(request: Request, response_id: str) -> Response:
        return await stored_response(request, response_id, delete=True)

    return store
