"""Reading HTTP answers into results or typed errors; pure, shared by the sync and async clients."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from modelplex.errors import APIConnectionError, InvalidResponseError, error_from_response
from modelplex.sdk.calls import Call

T = TypeVar("T")

# Sent on streaming requests; the router holds the stream open with ``: loading`` comments meanwhile.
SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}

# Loads of big models take minutes and the router holds requests meanwhile, so reads wait long by default.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def read_answer(call: Call[T], status_code: int, headers: Mapping[str, str], text: str) -> T:
    """The result of ``call`` from its HTTP answer; an error answer raises its typed error."""
    if status_code >= 400:
        raise error_from_response(status_code, headers, text)
    try:
        body: Any = json.loads(text)
    except ValueError:
        raise InvalidResponseError(
            f"{call.method} {call.path} answered HTTP {status_code} with something that is not JSON: {text[:200]!r}",
            status_code=status_code,
        ) from None
    return call.parse(body)


def check_event_stream(path: str, status_code: int, headers: Mapping[str, str]) -> None:
    """Refuse a 2xx streaming answer that is not an event stream (a wrong URL or a proxy's page)."""
    content_type = headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "text/event-stream":
        raise InvalidResponseError(
            f"POST {path} answered HTTP {status_code} with {content_type or 'no content type'}, not an event stream",
            status_code=status_code,
        )


def stream_cut_error(path: str) -> APIConnectionError:
    return APIConnectionError(f"the stream from POST {path} ended before its last event; the answer is incomplete")


@contextmanager
def transport_errors(base_url: str) -> Iterator[None]:
    """Turn httpx's failures below HTTP into APIConnectionError (works around async code too)."""
    try:
        yield
    except httpx.TransportError as exc:
        raise connection_error(base_url, exc) from exc


def connection_error(base_url: str, exc: httpx.TransportError) -> APIConnectionError:
    """A readable error for a failure below HTTP: refused connection, timeout, dropped stream."""
    if isinstance(exc, httpx.TimeoutException):
        return APIConnectionError(
            f"no answer from {base_url} in time ({type(exc).__name__}); raise the timeout?"
        )
    if isinstance(exc, httpx.ConnectError):
        return APIConnectionError(f"cannot connect to {base_url}: {exc or 'connection refused'}")
    return APIConnectionError(f"connection to {base_url} failed: {type(exc).__name__}: {exc}")
