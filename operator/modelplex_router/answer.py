"""How an answer reaches the client: the runtime's own (OpenAI paths) or translated to another API.

The forwarder (``proxy.py``) never looks inside an answer. It hands the runtime's bytes to an
``Answer`` made for the request, which returns what the client gets: unchanged for the OpenAI paths
(``PASSTHROUGH``), a Responses or Messages object for ``modelplex_router.apis``. Streams go through a
``StreamTranslator`` fed chunk by chunk as the bytes arrive (split anywhere), so nothing is buffered.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.responses import JSONResponse

from modelplex_router.errors import RouterError


class StreamTranslator(Protocol):
    """One stream's translation; every method returns the bytes to send on (possibly none)."""

    def feed(self, chunk: bytes) -> bytes:
        """The next bytes of the runtime's event stream."""
        ...

    def finish(self) -> bytes:
        """The runtime's stream ended (cleanly or not: a translator checks that it saw the end)."""
        ...

    def fail(self, err: RouterError) -> bytes:
        """The router ends the stream: the load failed, the runtime is unreachable or died mid-stream."""
        ...

    def refused(self, status: int, content: bytes) -> bytes:
        """The runtime answered this stream with an error body (``status``) instead of events."""
        ...


class Answer(Protocol):
    """How one request's answer is given to the client."""

    def whole(self, status: int, content: bytes, media_type: str) -> tuple[int, bytes, str]:
        """A non-streamed answer (or an error the runtime sent instead of a stream)."""
        ...

    def stream(self) -> StreamTranslator:
        """A translator for this request's stream."""
        ...

    def keepalive(self, model_id: str, waited: float | None) -> bytes:
        """Sent to a held stream while its model loads (``waited`` is None for the first one)."""
        ...


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that echoes what a client sent (a model id,
    a field) renders even when that holds text UTF-8 cannot encode, such as a lone surrogate."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


class ErrorStyle(Protocol):
    """An API's error shape, for the errors the router answers itself."""

    def response(self, err: RouterError) -> JSONResponse: ...


class OpenAIErrors:
    """``{"error": {"message", "type", "param", "code"}}``; in a stream, one ``data:`` event of it."""

    def response(self, err: RouterError) -> JSONResponse:
        return SafeJSONResponse(err.body(), status_code=err.status_code, headers=err.headers)

    def event(self, err: RouterError) -> bytes:
        return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


OPENAI_ERRORS = OpenAIErrors()


def loading_comment(model_id: str, waited: float | None) -> bytes:
    """The SSE comment a held OpenAI-style stream gets while its model loads (clients ignore comments)."""
    if waited is None:
        return f": loading {model_id} ...\n\n".encode()
    return f": loading {model_id} ... {waited:.0f}s\n\n".encode()


class _Relay:
    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""

    def fail(self, err: RouterError) -> bytes:
        return OPENAI_ERRORS.event(err)

    def refused(self, status: int, content: bytes) -> bytes:
        return b"data: " + content.strip() + b"\n\n"


class Passthrough:
    """The runtime's answer as it is: the OpenAI paths the runtimes serve themselves."""

    _relay = _Relay()

    def whole(self, status: int, content: bytes, media_type: str) -> tuple[int, bytes, str]:
        return status, content, media_type

    def stream(self) -> StreamTranslator:
        return self._relay  # stateless: one serves every stream

    def keepalive(self, model_id: str, waited: float | None) -> bytes:
        return loading_comment(model_id, waited)


PASSTHROUGH = Passthrough()
