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
    def __init__(
        self, clients: UpstreamClients, loading_comment_interval: float, stall_timeout: float
    ) -> None:
        self._clients = clients
        self._interval = loading_comment_interval
        self._stall_timeout = stall_timeout

    def _failure(self, coord: ModelCoordinator, exc: httpx.HTTPError, when: str) -> UpstreamError:
        """The client's error for a failed exchange with the runtime; the monitor looks at whether it died."""
        coord.spawn(after_upstream_failure(coord))
        return UpstreamError(f"model {coord.api_id!r}: the runtime failed {when} ({type(exc).__name__})")

    def _stalled(self, coord: ModelCoordinator, endpoint: Endpoint, when: str) -> RuntimeStalled:
        """The runtime sent nothing for the stall timeout: end the request, have its health checked now."""
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

    async def _exchange(
        self, endpoint: Endpoint, path: str, body: bytes
    ) -> tuple[httpx.Response, bytes | None]:
        """Send the request and read the whole answer, unless it is a stream (the caller relays that)."""
        client = self._clients.next()
        request = client.build_request(
            "POST", endpoint.url + path, content=body, headers={"content-type": "application/json"}
        )
        upstream = await client.send(request, stream=True)
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            return upstream, None
        try:
            return upstream, await upstream.aread()
        finally:
            await upstream.aclose()

    async def _open(
        self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes
    ) -> tuple[httpx.Response, bytes | None]:
        """``_exchange`` bounded by the stall timeout and ended if the runtime is lost. A whole answer
        releases the request; on any failure it is released and a RouterError raised."""
        try:
            upstream, content = await endpoint.abortable(
                self._exchange(endpoint, path, body), self._stall_timeout
            )
        except httpx.ConnectError as exc:
            coord.release()
            await after_upstream_failure(coord)
            err = UpstreamError(f"model {coord.api_id!r}: the runtime is unreachable ({type(exc).__name__})")
            # Nothing reached the runtime, so sending again (after a reload) cannot run the request twice.
            err.retryable = True
            raise err from None
        except httpx.HTTPError as exc:
            coord.release()
            raise self._failure(coord, exc, "to answer") from None
        except TimeoutError:
            coord.release()
            raise self._stalled(coord, endpoint, "before answering") from None
        except BaseException:  # RouterError (lost), or the client left (see app.until_client_leaves)
            coord.release()
            raise
        if content is not None:
            coord.release()
            endpoint.note_activity()
        return upstream, content

    async def forward(
        self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes, finish: Finish
    ) -> Response:
        """Forward a request already counted in flight (``coord.acquire``)."""
        upstream, content = await self._open(coord, endpoint, path, body)
        if content is not None:
            finish(upstream.status_code)
            # A runtime that is full says when to come back (429 + Retry-After): pass that on.
            retry_after = upstream.headers.get("retry-after")
            return Response(
                content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type", "application/json"),
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
                    chunk = await endpoint.abortable(chunks.__anext__(), self._stall_timeout)
                except StopAsyncIteration:
                    break
                endpoint.note_activity()
                yield chunk
        except (httpx.HTTPError, TimeoutError) as exc:
            # The runtime died, cut or stalled the stream: end the client's stream with an error event.
            err = (
                self._stalled(coord, endpoint, "mid-stream")
                if isinstance(exc, TimeoutError)
                else self._failure(coord, exc, "mid-stream")
            )
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
                upstream, content = await self._open(coord, endpoint, path, body)
                if content is not None:
                    # The runtime refused the request (bad parameters): pass its error on as an event.
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
