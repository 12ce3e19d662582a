"""OpenAI-shaped errors: one exception type carrying status, message, type, code and param."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_ready(message: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code="model_not_ready")


def format_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A readable message naming the offending fields, and the first field as OpenAI's ``param``."""
    parts: list[str] = []
    first: str | None = None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc)
        first = first or field or None
        msg = str(err.get("msg", "invalid value"))
        parts.append(f"{field}: {msg}" if field else msg)
    return "invalid request: " + "; ".join(parts), first
