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
from modelplex_router.endpoint import Endpoint
from modelplex_router.errors import RouterError, RuntimeStalled, UpstreamError
from modelplex_router.monitor import after_upstream_failure
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


def sse_event(err: RouterError) -> bytes:
    """An error as the last event of a stream (the status line has long been sent)."""
    return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


class Forwarder:
    def __init__(self, clients: UpstreamClients, loading_comment_interval: float, stall_timeout: float) -> None:
        self._clients = clients
        self._interval = loading_comment_interval
        self._stall_timeout = stall_timeout

    def _failure(self, coord: ModelCoordinator, endpoint: Endpoint, exc: httpx.HTTPError, when: str) -> RouterError:
        """The client's error for a failed exchange with the runtime; a stall also asks for a health
        check soon, anything else for a look at whether the runtime died."""
        if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
            coord.metrics.upstream_stalls.labels(model=coord.api_id).inc()
            endpoint.health.check_soon()
            log.warning(
                "model %s: the runtime sent nothing for %gs %s; request ended",
                coord.api_id,
                self._stall_timeout,
                when,
                extra={"model": coord.api_id},
            )
            return RuntimeStalled(
                f"model {coord.api_id!r}: the runtime sent nothing for {self._stall_timeout:g}s {when}"
            )
        coord.spawn(after_upstream_failure(coord))
        return UpstreamError(f"model {coord.api_id!r}: the runtime failed {when} ({type(exc).__name__})")

    async def _send(self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes) -> httpx.Response:
        """Open the upstream response; on failure release the request and raise a RouterError."""
        client = self._clients.next()
        request = client.build_request(
            "POST", endpoint.url + path, content=body, headers={"content-type": "application/json"}
        )
        try:
            return await endpoint.abortable(client.send(request, stream=True))
        except httpx.HTTPError as exc:
            coord.release()
            if isinstance(exc, httpx.ConnectError):
                await after_upstream_failure(coord)
                err = UpstreamError(f"model {coord.api_id!r}: the runtime is unreachable ({type(exc).__name__})")
                # Nothing reached the runtime, so sending again (after a reload) cannot run the request twice.
                err.retryable = True
                raise err from None
            raise self._failure(coord, endpoint, exc, "before answering") from None
        except RouterError:
            coord.release()
            raise

    async def _read_whole(
        self, coord: ModelCoordinator, endpoint: Endpoint, upstream: httpx.Response
    ) -> bytes:
        """The whole (non-streamed) answer; the request is released either way."""
        try:
            content = await endpoint.abortable(upstream.aread())
        except httpx.HTTPError as exc:
            raise self._failure(coord, endpoint, exc, "mid-response") from None
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
            coord.release()
        endpoint.note_activity()
        return content

    async def forward(
        self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes, finish: Finish
    ) -> Response:
        """Forward a request already counted in flight (``coord.acquire``)."""
        try:
            upstream = await self._send(coord, endpoint, path, body)
        except asyncio.CancelledError:
            coord.release()  # the client left before the runtime answered (see app.until_client_leaves)
            raise
        content_type = upstream.headers.get("content-type", "application/json")
        if not content_type.startswith("text/event-stream"):
            content = await self._read_whole(coord, endpoint, upstream)
            finish(upstream.status_code)
            # A runtime that is full says when to come back (429 + Retry-After): pass that on.
            retry_after = upstream.headers.get("retry-after")
            return Response(
                content,
                status_code=upstream.status_code,
                media_type=content_type,
                headers={"retry-after": retry_after} if retry_after else None,
            )
        return RelayResponse(
            self._relay(coord, endpoint, upstream, finish),
            status_code=upstream.status_code,
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def _relay(
        self, coord: ModelCoordinator, endpoint: Endpoint, upstream: httpx.Response, finish: Finish
    ) -> AsyncIterator[bytes]:
        status = upstream.status_code
        chunks = upstream.aiter_raw()
        try:
            while True:
                try:
                    chunk = await endpoint.abortable(chunks.__anext__())
                except StopAsyncIteration:
                    break
                endpoint.note_activity()
                yield chunk
        except httpx.HTTPError as exc:
            # The runtime died, cut or stalled the stream: end the client's stream with an error event.
            err = self._failure(coord, endpoint, exc, "mid-stream")
            status = err.status_code
            yield sse_event(err)
        except RouterError as err:  # the runtime was declared hung
            status = err.status_code
            yield sse_event(err)
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
                yield sse_event(err)
                return
            endpoint = waiter.result()
            handed_off = True
            try:
                upstream = await self._send(coord, endpoint, path, body)
                if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
                    # The runtime refused the request (bad parameters): pass its error on as an event.
                    content = await self._read_whole(coord, endpoint, upstream)
                    finish(upstream.status_code)
                    yield b"data: " + content.strip() + b"\n\n"
                    return
            except RouterError as err:
                finish(err.status_code)
                yield sse_event(err)
                return
            relay = self._relay(coord, endpoint, upstream, finish)
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
