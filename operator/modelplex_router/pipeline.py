"""The path of one model request through the router: who calls, which model, may they, wait, forward.

Every path that reaches a model goes through ``Pipeline.handle`` with an ``Api``:

    principal -> body (request_body's checks) -> model (alias, default) -> api.exchange -> admit
    -> acquire -> forward

The OpenAI paths the runtimes serve themselves pass through unchanged (``PassthroughApi``). The
Responses and Messages APIs (``modelplex_router.apis``) plug in an ``Api`` that turns the request into
a chat completion and an ``Answer`` that turns the reply back, so keys, scopes, limits, holding and
auto-reload apply to them exactly as to chat completions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import Response

from modelplex_router.answer import OPENAI_ERRORS, PASSTHROUGH, Answer, ErrorStyle
from modelplex_router.auth import Principal
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.endpoint import Endpoint
from modelplex_router.errors import RouterError
from modelplex_router.guard import AccessGuard
from modelplex_router.limits import Admission
from modelplex_router.metrics import RouterMetrics
from modelplex_router.proxy import Forwarder
from modelplex_router.request_body import (
    check_json_content_type,
    check_routing_fields,
    encode_json,
    parse_json_object,
)
from modelplex_router.routing import request_affinity

access_log = logging.getLogger("modelplex_router.access")


@dataclass(frozen=True)
class Incoming:
    """A request as the pipeline has read it, before it becomes an upstream request."""

    path: str
    payload: dict[str, Any]
    raw: bytes
    principal: Principal
    model_id: str
    """The API id the request's ``model`` resolved to."""


@dataclass(frozen=True)
class Exchange:
    """What goes to the runtime for one request, and how its answer comes back."""

    path: str
    payload: dict[str, Any]
    stream: bool
    answer: Answer = PASSTHROUGH
    raw: bytes | None = None
    """The client's body, sent as it is when its ``model`` already is the API id (no re-serialising)."""

    def body(self, model_id: str) -> bytes:
        if self.raw is not None and self.payload.get("model") == model_id:
            return self.raw
        self.payload["model"] = model_id  # the runtime serves the model under its API id
        return encode_json(self.payload)


class Api(Protocol):
    """One API's requests: its error shape and how a request becomes an upstream exchange."""

    errors: ErrorStyle

    def exchange(self, incoming: Incoming) -> Exchange:
        """Raises RouterError (in this API's shape) for a request it cannot serve."""
        ...


class PassthroughApi:
    """An OpenAI path the runtime serves itself (chat, completions, embeddings, tokenize)."""

    errors: ErrorStyle = OPENAI_ERRORS

    def exchange(self, incoming: Incoming) -> Exchange:
        payload = incoming.payload
        return Exchange(incoming.path, payload, payload.get("stream") is True, PASSTHROUGH, incoming.raw)


class Pipeline:
    def __init__(
        self,
        guard: AccessGuard,
        forwarder: Forwarder,
        metrics: RouterMetrics,
        resolve_for: Callable[[Principal, object], ModelCoordinator],
    ) -> None:
        self.guard = guard
        self.forwarder = forwarder
        self.metrics = metrics
        self.resolve_for = resolve_for

    def recorder(self, request: Request, endpoint: str) -> RequestRecord:
        return RequestRecord(self.metrics, request.method, request.url.path, endpoint)

    async def handle(self, request: Request, api: Api) -> Response:
        """Serve one model request through ``api`` (counted in the metrics under its path)."""
        record = self.recorder(request, request.url.path)
        try:
            principal = self.guard.principal(request)
            check_json_content_type(request.headers.get("content-type"))
            raw = await self.guard.read_body(request)
            payload = parse_json_object(raw)
            check_routing_fields(payload)
            coord = self.resolve_for(principal, payload.get("model"))
            record.model = coord.api_id
            exchange = api.exchange(Incoming(request.url.path, payload, raw, principal, coord.api_id))
            record.admission = self.guard.admit(principal, coord.api_id, exchange.payload)
            body = exchange.body(coord.api_id)
            return await self._serve(request, coord, exchange, body, record.finish)
        except RouterError as err:
            record.finish(err.status_code)
            return api.errors.response(err)
        except BaseException:
            record.release()
            raise

    async def _serve(
        self,
        request: Request,
        coord: ModelCoordinator,
        exchange: Exchange,
        body: bytes,
        finish: Callable[[int], None],
    ) -> Response:
        forwarder, path, answer = self.forwarder, exchange.path, exchange.answer
        # Prefix affinity hashes what the runtime is sent: for a translated API, the chat completion's
        # messages, so a Responses or Messages conversation lands where its prefix is cached.
        affinity = request_affinity(coord.scaling, exchange.payload)
        endpoint = coord.try_acquire(affinity)
        if endpoint is None and exchange.stream:
            coord.check_can_wait()  # a 429 (or a back-off's 503) must come before any byte of the stream
            return forwarder.held_stream(coord, path, body, finish, answer, affinity)

        async def serve(endpoint: Endpoint | None) -> Response:
            if endpoint is None:
                endpoint = await coord.acquire(affinity)
            # A replica lost before it answered is retried once by the forwarder (another replica, or
            # the model reloaded).
            return await forwarder.forward(coord, endpoint, path, body, finish, answer, affinity)

        if exchange.stream:
            return await serve(endpoint)  # a stream's response watches for the client itself
        response = await until_client_leaves(request, serve(endpoint))
        if response is None:
            finish(499)
            return Response(status_code=499)
        return response


class RequestRecord:
    """One request's bookkeeping: its admission (released once) and its metrics and access line."""

    def __init__(self, metrics: RouterMetrics, method: str, path: str, endpoint: str) -> None:
        self.metrics = metrics
        self.method = method
        self.path = path
        self.endpoint = endpoint
        self.model = "unknown"
        self.admission: Admission | None = None
        self.started = time.perf_counter()

    def release(self) -> None:
        if self.admission is not None:
            self.admission.release()

    def finish(self, code: int) -> None:
        self.release()
        elapsed = time.perf_counter() - self.started
        self.metrics.requests_total.labels(model=self.model, code=str(code), endpoint=self.endpoint).inc()
        self.metrics.request_duration.labels(model=self.model, endpoint=self.endpoint).observe(elapsed)
        access_log.info(
            "%s %s %s %d %.3fs",
            self.method,
            self.path,
            self.model,
            code,
            elapsed,
            extra={
                "method": self.method,
                "path": self.path,
                "endpoint": self.endpoint,
                "model": self.model,
                "status": code,
                "duration_s": round(elapsed, 4),
            },
        )


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
