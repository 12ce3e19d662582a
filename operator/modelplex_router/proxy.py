"""Forward one request to its model's runtime: streams pass through chunk by chunk, never buffered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import httpx
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelplex_router.answer import PASSTHROUGH, Answer
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


# Transport errors that mean the replica went away before any byte of its answer came back: refused,
# reset, or closed without a response (a process killed with the request on it).
_LOST_BEFORE_ANSWERING = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass
class Opened:
    """A request the runtime has begun to answer: its whole answer, or a stream's first chunk and the rest."""

    upstream: httpx.Response
    content: bytes | None
    chunks: AsyncIterator[bytes] | None = None
    first: bytes = b""


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

    async def _exchange(self, endpoint: Endpoint, path: str, body: bytes) -> Opened:
        """Send the request and read the whole answer, or a stream's first chunk (the caller relays the
        rest): until then nothing has reached the client, so a replica lost meanwhile costs a retry,
        not the request."""
        client = self._clients.next()
        request = client.build_request(
            "POST", endpoint.url + path, content=body, headers={"content-type": "application/json"}
        )
        upstream = await client.send(request, stream=True)
        try:
            if upstream.headers.get("content-type", "").startswith("text/event-stream"):
                chunks = upstream.aiter_raw()
                first = await anext(chunks, b"")
                return Opened(upstream, None, chunks, first)
            content = await upstream.aread()
        except BaseException:
            await upstream.aclose()
            raise
        await upstream.aclose()
        return Opened(upstream, content)

    async def _open(self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes) -> Opened:
        """``_exchange`` bounded by the stall timeout and ended if the replica is lost. A whole answer
        releases the request; on any failure it is released and a RouterError raised, ``retryable`` when
        the replica was unreachable or lost before it answered."""
        try:
            opened = await endpoint.abortable(self._exchange(endpoint, path, body), self._stall_timeout)
        except _LOST_BEFORE_ANSWERING as exc:
            coord.release(endpoint)
            await after_upstream_failure(coord)
            err = UpstreamError(
                f"model {coord.api_id!r}: the runtime is unreachable or was lost before it answered "
                f"({type(exc).__name__})"
            )
            # Nothing came back, so nothing reached the client: sending it again (to another replica, or
            # after a reload) loses nothing; a generation the lost runtime had begun is gone with it.
            err.retryable = True
            raise err from None
        except httpx.HTTPError as exc:
            coord.release(endpoint)
            raise self._failure(coord, exc, "to answer") from None
        except TimeoutError:
            coord.release(endpoint)
            raise self._stalled(coord, endpoint, "before answering") from None
        except BaseException:  # RouterError (lost), or the client left (see pipeline.until_client_leaves)
            coord.release(endpoint)
            raise
        endpoint.note_activity()
        if opened.content is not None:
            coord.release(endpoint)
        return opened

    async def open(
        self, coord: ModelCoordinator, endpoint: Endpoint, path: str, body: bytes, affinity: str | None
    ) -> tuple[Endpoint, Opened]:
        """``_open``, and once more when the replica was lost before answering: on another replica of
        the model when there is one, else on the same model once it is back (a reload)."""
        try:
            return endpoint, await self._open(coord, endpoint, path, body)
        except UpstreamError as err:
            if not err.retryable:
                raise
        endpoint = await coord.acquire(affinity, avoid=(endpoint,))
        return endpoint, await self._open(coord, endpoint, path, body)

    async def forward(
        self,
        coord: ModelCoordinator,
        endpoint: Endpoint,
        path: str,
        body: bytes,
        finish: Finish,
        answer: Answer = PASSTHROUGH,
        affinity: str | None = None,
    ) -> Response:
        """Forward a request already counted in flight on ``endpoint`` (``coord.acquire``); ``answer``
        gives the reply."""
        endpoint, opened = await self.open(coord, endpoint, path, body, affinity)
        upstream = opened.upstream
        if opened.content is not None:
            media_type = upstream.headers.get("content-type", "application/json")
            status, content, media_type = answer.whole(upstream.status_code, opened.content, media_type)
            finish(status)
            # A runtime that is full says when to come back (429 + Retry-After): pass that on.
            retry_after = upstream.headers.get("retry-after")
            return Response(
                content,
                status_code=status,
                media_type=media_type,
                headers={"retry-after": retry_after} if retry_after else None,
            )
        return RelayResponse(
            self._relay(coord, endpoint, opened, finish, answer),
            status_code=upstream.status_code,
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def _relay(
        self,
        coord: ModelCoordinator,
        endpoint: Endpoint,
        opened: Opened,
        finish: Finish,
        answer: Answer,
    ) -> AsyncIterator[bytes]:
        upstream = opened.upstream
        status = upstream.status_code
        assert opened.chunks is not None
        chunks = opened.chunks
        stream = answer.stream()
        try:
            if opened.first:
                out = stream.feed(opened.first)
                if out:
                    yield out
            while True:
                try:
                    chunk = await endpoint.abortable(chunks.__anext__(), self._stall_timeout)
                except StopAsyncIteration:
                    break
                endpoint.note_activity()
                out = stream.feed(chunk)
                if out:
                    yield out
            out = stream.finish()
            if out:
                yield out
        except (httpx.HTTPError, TimeoutError) as exc:
            # The runtime died, cut or stalled the stream: end the client's stream with an error event.
            err = (
                self._stalled(coord, endpoint, "mid-stream")
                if isinstance(exc, TimeoutError)
                else self._failure(coord, exc, "mid-stream")
            )
            status = err.status_code
            yield stream.fail(err)
        except RouterError as err:  # the runtime was declared hung
            status = err.status_code
            yield stream.fail(err)
        finally:
            coord.release(endpoint)
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
            finish(status)

    def held_stream(
        self,
        coord: ModelCoordinator,
        path: str,
        body: bytes,
        finish: Finish,
        answer: Answer = PASSTHROUGH,
        affinity: str | None = None,
    ) -> Response:
        """A streaming request whose model is not loaded: answer at once, keep the stream alive while the
        model loads (``: loading`` comments, or the API's own keep-alive), then relay the runtime's
        stream (or end with the API's error event)."""
        return RelayResponse(
            self._held(coord, path, body, finish, answer, affinity),
            status_code=200,
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def _held(
        self,
        coord: ModelCoordinator,
        path: str,
        body: bytes,
        finish: Finish,
        answer: Answer,
        affinity: str | None,
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        waiter = asyncio.ensure_future(coord.acquire(affinity))
        handed_off = False
        try:
            yield answer.keepalive(coord.api_id, None)
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self._interval)
                if done:
                    break
                yield answer.keepalive(coord.api_id, time.monotonic() - started)
            exc = waiter.exception()
            if exc is not None:
                err = exc if isinstance(exc, RouterError) else RouterError(str(exc))
                handed_off = True
                finish(err.status_code)
                yield answer.stream().fail(err)
                return
            endpoint = waiter.result()
            handed_off = True
            try:
                endpoint, opened = await self.open(coord, endpoint, path, body, affinity)
                if opened.content is not None:
                    # The runtime refused the request (bad parameters): pass its error on as an event.
                    finish(opened.upstream.status_code)
                    yield answer.stream().refused(opened.upstream.status_code, opened.content)
                    return
            except RouterError as err:
                finish(err.status_code)
                yield answer.stream().fail(err)
                return
            relay = self._relay(coord, endpoint, opened, finish, answer)
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
                    lambda t: None if t.cancelled() or t.exception() is not None else coord.release(t.result())
                )
                finish(499)
            elif not handed_off and not waiter.cancelled() and waiter.exception() is None:
                coord.release(waiter.result())
                finish(499)
