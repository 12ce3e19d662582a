"""Forward one request to its model's runtime: streams pass through chunk by chunk, never buffered."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.errors import RouterError, UpstreamError, error_body
from modelplex_router.upstream import UpstreamClients

log = logging.getLogger("modelplex_router.proxy")

Finish = Callable[[int], None]
"""Called once per request with the final status code (metrics + access line)."""

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class RelayResponse(StreamingResponse):
    """A StreamingResponse that always closes its iterator, so the upstream is closed on disconnect."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


def sse_error(
    message: str, error_type: str = "server_error", code: str | None = "runtime_unavailable"
) -> bytes:
    return b"data: " + json.dumps(error_body(message, error_type, code)).encode() + b"\n\n"


class Forwarder:
    def __init__(self, clients: UpstreamClients, loading_comment_interval: float) -> None:
        self._clients = clients
        self._interval = loading_comment_interval

    async def _send(self, coord: ModelCoordinator, url: str, path: str, body: bytes) -> httpx.Response:
        """Open the upstream response; on failure release the request and raise UpstreamError."""
        client = self._clients.next()
        request = client.build_request(
            "POST", url + path, content=body, headers={"content-type": "application/json"}
        )
        try:
            return await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            coord.release()
            await coord.after_upstream_failure()
            err = UpstreamError(f"model {coord.api_id!r}: the runtime is unreachable ({type(exc).__name__})")
            # Nothing reached the runtime, so sending again (after a reload) cannot run the request twice.
            err.retryable = isinstance(exc, httpx.ConnectError)
            raise err from None

    async def forward(
        self, coord: ModelCoordinator, url: str, path: str, body: bytes, finish: Finish
    ) -> Response:
        """Forward a request already counted in flight (``coord.acquire``)."""
        try:
            upstream = await self._send(coord, url, path, body)
        except asyncio.CancelledError:
            coord.release()  # the client left before the runtime answered (see app.until_client_leaves)
            raise
        content_type = upstream.headers.get("content-type", "application/json")
        if not content_type.startswith("text/event-stream"):
            try:
                content = await upstream.aread()
            except httpx.HTTPError as exc:
                await coord.after_upstream_failure()
                raise UpstreamError(
                    f"model {coord.api_id!r}: the runtime failed mid-response ({type(exc).__name__})"
                ) from None
            finally:
                await upstream.aclose()
                coord.release()
            finish(upstream.status_code)
            return Response(content, status_code=upstream.status_code, media_type=content_type)
        return RelayResponse(
            self._relay(coord, upstream, finish),
            status_code=upstream.status_code,
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def _relay(
        self, coord: ModelCoordinator, upstream: httpx.Response, finish: Finish
    ) -> AsyncIterator[bytes]:
        status = upstream.status_code
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            # The runtime died or cut the stream: end the client's stream with an error event, not a hang.
            status = 502
            yield sse_error(f"model {coord.api_id!r}: the runtime stopped mid-stream ({type(exc).__name__})")
            coord.check_soon()
        finally:
            coord.release()
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
            finish(status)

    def held_stream(self, coord: ModelCoordinator, path: str, body: bytes, finish: Finish) -> Response:
        """A streaming request whose model is not loaded: answer at once, send ``: loading`` comments while
        the model loads, then relay the runtime's stream (or end with an error event)."""
        return RelayResponse(
            self._held(coord, path, body, finish),
            status_code=200,
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def _held(
        self, coord: ModelCoordinator, path: str, body: bytes, finish: Finish
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        comment = f": loading {coord.api_id} ...\n\n".encode()
        waiter = asyncio.ensure_future(coord.acquire())
        handed_off = False
        try:
            yield comment
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self._interval)
                if done:
                    break
                yield f": loading {coord.api_id} ... {time.monotonic() - started:.0f}s\n\n".encode()
            exc = waiter.exception()
            if exc is not None:
                err = exc if isinstance(exc, RouterError) else RouterError(str(exc))
                handed_off = True
                finish(err.status_code)
                yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                return
            url = waiter.result()
            handed_off = True
            try:
                upstream = await self._send(coord, url, path, body)
            except UpstreamError as err:
                finish(err.status_code)
                yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                return
            if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
                # The runtime refused the request (bad parameters): pass its error on as an event.
                try:
                    content = await upstream.aread()
                finally:
                    await upstream.aclose()
                    coord.release()
                finish(upstream.status_code)
                yield b"data: " + content.strip() + b"\n\n"
                return
            relay = self._relay(coord, upstream, finish)
            try:
                async for chunk in relay:
                    yield chunk
            finally:
                with anyio.CancelScope(shield=True):
                    await relay.aclose()
        finally:
            if not waiter.done():
                # Cancelled while waiting; if the wait won the race, give the slot back.
                waiter.cancel()
                waiter.add_done_callback(
                    lambda t: None if t.cancelled() or t.exception() is not None else coord.release()
                )
                finish(499)
            elif not handed_off and not waiter.cancelled() and waiter.exception() is None:
                coord.release()
                finish(499)
