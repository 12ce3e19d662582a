"""Bounds on client connections that uvicorn lacks: a cap on open connections and a header deadline.

uvicorn (``httptools`` protocol) closes a kept-alive connection that stays idle ``timeout_keep_alive``
seconds after a response, but any byte cancels that timer, and nothing bounds a connection that never
completes its request headers: a client sending one header byte every few seconds (slowloris), or one
that connects and sends nothing, holds a connection forever. Its ``limit_concurrency`` answers a plain
text 503 and counts running requests too, so it would refuse requests legitimately held for a model
load. ``guarded_protocol`` subclasses uvicorn's protocol with:

* a header deadline: from the moment a connection waits for a request (opened, or its previous
  response sent) the request's headers must be complete within ``header_timeout`` seconds, however
  slowly they trickle; otherwise 408 (if something was sent) and the connection is closed;
* a connection cap: a connection beyond ``max_connections`` open ones gets a 503 in OpenAI's error
  shape with ``Retry-After`` and is closed at once.

A request whose headers are in is never touched here: holding it while its model loads, however long,
is the coordinator's business (bounded by ``max_wait_seconds``). The body's deadline is enforced where
the body is read (``guard.AccessGuard.read_body``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelplex_router.errors import error_body

ConnectionEvent = Callable[[str], None]
"""Told ``refused`` (over the cap) or ``header_timeout``, for metrics."""


def _response(status: str, code: str, message: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = json.dumps(
        error_body(message, "server_error" if status.startswith("5") else "invalid_request_error", code)
    )
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in extra]
    head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def guarded_protocol(
    header_timeout: float, max_connections: int, retry_after: int, on_event: ConnectionEvent | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the bounds above (pass as ``uvicorn.Config(http=...)``)."""
    over_capacity = _response(
        "503 Service Unavailable",
        "too_many_connections",
        f"the router has {max_connections} connections open; retry later",
        (("retry-after", str(retry_after)),),
    )
    too_slow = _response(
        "408 Request Timeout",
        "request_timeout",
        f"the request headers did not arrive within {header_timeout:g}s",
    )
    notify = on_event or (lambda _event: None)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _received = False
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                notify("refused")
                self._refuse(transport)
                return
            self._await_headers()

        def _refuse(self, transport: asyncio.Transport) -> None:
            """Answer 503 and close, but only once the client's request is read (or after a moment):
            closing with its bytes unread would send a reset, and the client might never see the 503."""
            self._refused = True
            transport.write(over_capacity)
            if transport.can_write_eof():
                transport.write_eof()
            self._header_deadline = self.loop.call_later(1.0, transport.close)

        def _await_headers(self) -> None:
            self._cancel_deadline()
            self._received = False
            if header_timeout > 0:
                self._header_deadline = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _cancel_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing():
                return
            notify("header_timeout")
            if self._received:
                self.transport.write(too_slow)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # the 503 is out; what the client sends is read and dropped
            if self._header_deadline is not None and data:
                self._received = True
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._cancel_deadline()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)
            super().on_response_complete()
            # The next request on this connection gets its own deadline, unless one is already parsed
            # and queued (pipelining) or the connection is closing.
            if not pipelined and not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol
