"""Typed errors of the client SDK, and the pure mapping from an HTTP error answer to one of them.

The router answers errors in OpenAI's shape ``{"error": {"message", "type", "code"}}``; the exception
class follows the HTTP status so callers can catch what they can act on (retry later, pick another
model, fix the request) without parsing messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ModelplexError(Exception):
    """Base of every SDK error; ``status_code`` is None when no HTTP answer came back."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str | None = None,
        code: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.code = code
        self.body = body

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status_code})" if self.status_code is not None else self.message


class APIConnectionError(ModelplexError):
    """The server could not be reached, or it did not answer in time."""


class InvalidResponseError(ModelplexError):
    """The server answered something that is not the modelplex API (wrong URL, proxy page, ...)."""


class BadRequestError(ModelplexError):
    """400 or 422: the request itself is wrong."""


class AuthenticationError(ModelplexError):
    """401 or 403: missing or rejected API key."""


class ModelNotFoundError(ModelplexError):
    """404, or a model status of ``not_found``: no model has that id."""


class RateLimitError(ModelplexError):
    """429: too many requests are already waiting; retry after ``retry_after`` seconds when given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailableError(ModelplexError):
    """503: the server cannot serve the request now; retry after ``retry_after`` seconds when given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ModelLoadingError(ServiceUnavailableError):
    """503 while the model is still loading (the wait for it timed out); the load goes on server-side."""


class ModelLoadFailedError(ModelplexError):
    """The model could not be loaded (status ``failed`` or ``internal_error``)."""


class InternalServerError(ModelplexError):
    """Any other 5xx answer."""


_LOAD_FAILED_CODES = frozenset({"model_load_failed", "load_failed", "model_failed"})
_LOADING_CODES = frozenset({"model_loading", "model_not_ready", "load_timeout", "model_load_timeout"})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; None for a missing or HTTP-date value (we do not guess clocks)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _error_fields(status_code: int, text: str) -> tuple[str, str | None, str | None, Any]:
    """(message, type, code, decoded body) from an error body in OpenAI's, FastAPI's or no known shape."""
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            message = str(err.get("message") or f"HTTP {status_code}")
            type_ = err.get("type")
            code = err.get("code")
            return message, None if type_ is None else str(type_), None if code is None else str(code), body
        if isinstance(err, str):
            return err, None, None, body
        if "detail" in body:
            return str(body["detail"]), None, None, body
    snippet = text.strip()[:200]
    return (
        (snippet or f"HTTP {status_code} with an empty body"),
        None,
        None,
        body if body is not None else text,
    )


def error_from_response(status_code: int, headers: Mapping[str, str], text: str) -> ModelplexError:
    """The typed error for an HTTP error answer (status >= 400)."""
    message, type_, code, body = _error_fields(status_code, text)
    common: dict[str, Any] = {"status_code": status_code, "type": type_, "code": code, "body": body}
    retry_after = parse_retry_after(headers.get("retry-after"))
    if code in _LOAD_FAILED_CODES:
        return ModelLoadFailedError(message, **common)
    if status_code in (400, 422):
        return BadRequestError(message, **common)
    if status_code in (401, 403):
        return AuthenticationError(message, **common)
    if status_code == 404:
        return ModelNotFoundError(message, **common)
    if status_code == 429:
        return RateLimitError(message, retry_after=retry_after, **common)
    if status_code == 503:
        # Retry-After is only sent when a load wait timed out: the model is on its way.
        loading = retry_after is not None or code in _LOADING_CODES
        cls = ModelLoadingError if loading else ServiceUnavailableError
        return cls(message, retry_after=retry_after, **common)
    if status_code >= 500:
        return InternalServerError(message, **common)
    return ModelplexError(message, **common)


def error_from_stream_chunk(chunk: Mapping[str, Any]) -> ModelplexError:
    """The error for an ``{"error": ...}`` event sent in the middle of a stream (headers were already 200)."""
    err = chunk.get("error")
    fields = err if isinstance(err, Mapping) else {"message": str(err)}
    message = str(fields.get("message") or "the stream ended with an error")
    code = fields.get("code")
    type_ = fields.get("type")
    common: dict[str, Any] = {
        "type": None if type_ is None else str(type_),
        "code": None if code is None else str(code),
        "body": dict(chunk),
    }
    if common["code"] in _LOAD_FAILED_CODES:
        return ModelLoadFailedError(message, **common)
    return ModelplexError(message, **common)


# The error kinds a failed Responses or Messages stream names (OpenAI's codes, Anthropic's types).
_STREAM_FAILURES: dict[str, type[ModelplexError]] = {
    "rate_limit_exceeded": RateLimitError,
    "rate_limit_error": RateLimitError,
    "overloaded_error": ServiceUnavailableError,
    "not_found_error": ModelNotFoundError,
    "invalid_request_error": BadRequestError,
    "request_too_large": BadRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": AuthenticationError,
    **{code: ModelLoadFailedError for code in _LOAD_FAILED_CODES},
}


def error_from_stream_failure(message: str, kind: Any, body: Any) -> ModelplexError:
    """The error for a Responses ``response.failed`` / ``error`` event or a Messages ``error`` event;
    ``kind`` is the code or type it names (anything else is a server error)."""
    name = None if kind is None else str(kind)
    cls = _STREAM_FAILURES.get(name or "", InternalServerError)
    return cls(message, type=name, code=name, body=body)
