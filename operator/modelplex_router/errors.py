"""Errors that become OpenAI-shaped HTTP answers ({"error": {"message", "type", "code"}})."""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """An error with the HTTP status, OpenAI error type/code and headers it is answered with."""

    status_code = 500
    error_type = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.code, self.param)


class ModelNotFound(RouterError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class BadRequest(RouterError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(RouterError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(RouterError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class PayloadTooLarge(RouterError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(RouterError):
    status_code = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


class RequestTimeout(RouterError):
    status_code = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class RateLimited(RouterError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class TooManyWaiting(RouterError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_waiting"


class LoadWaitTimeout(RouterError):
    status_code = 503
    error_type = "server_error"
    code = "model_loading"


class LoadFailed(RouterError):
    status_code = 503
    error_type = "server_error"
    code = "model_load_failed"


class UpstreamError(RouterError):
    status_code = 502
    error_type = "server_error"
    code = "runtime_unavailable"
    retryable = False
    """True when the request never reached the runtime (connection refused)."""


class RuntimeStalled(RouterError):
    """The runtime sent no byte for ``stall_timeout_seconds``."""

    status_code = 504
    error_type = "server_error"
    code = "runtime_timeout"


class RuntimeUnresponsive(RouterError):
    """The runtime was declared hung (health checks failed) while the request was in flight."""

    status_code = 503
    error_type = "server_error"
    code = "runtime_unresponsive"


class StatusError(RouterError):
    """An error whose status is only known when it happens (a runtime's answer, a framework error)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status
        self.error_type = error_type or ("invalid_request_error" if status < 500 else "server_error")
        self.code = code


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
