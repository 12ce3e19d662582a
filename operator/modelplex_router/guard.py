"""Per-request access checks for the app: who is calling, may they, and are they within their limits."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

from modelplex_router.auth import ANONYMOUS, KeyRing, Principal, presented_key
from modelplex_router.errors import (
    BadRequest,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    Unauthorized,
)
from modelplex_router.key_source import KeySource
from modelplex_router.limits import (
    Admission,
    BoundError,
    LimitBook,
    OverLimit,
    RequestBounds,
    check_bounds,
    check_max_tokens,
)
from modelplex_router.settings import RouterSettings

audit_log = logging.getLogger("modelplex_router.audit")


class AccessGuard:
    def __init__(self, settings: RouterSettings, keys: KeySource) -> None:
        self.keys = keys
        self.book = LimitBook()
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.bounds = RequestBounds(settings.max_messages, settings.max_images, settings.max_input_chars)

    @property
    def ring(self) -> KeyRing:
        return self.keys.current()

    def principal(self, request: Request) -> Principal:
        """The caller's key (401 without a valid one), or ANONYMOUS when no keys are configured."""
        ring = self.keys.current()
        if ring.open:
            return ANONYMOUS
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        principal = ring.authenticate(key)
        if principal is None:
            message = (
                "Incorrect API key provided."
                if key
                else "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
            raise Unauthorized(message, headers={"WWW-Authenticate": "Bearer"})
        return principal

    @staticmethod
    def require_manage(principal: Principal, action: str, model_id: str) -> None:
        if not principal.manage:
            audit(principal, action, model_id, "denied")
            raise PermissionDenied(f"the key {principal.name!r} may not manage models ({action})")

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 past ``max_body_bytes`` (checked as it arrives, not after) and with
        408 when it is not all in within ``body_timeout_seconds`` (a client trickling it byte by byte)."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout:g}s ({size} bytes received)",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    def admit(self, principal: Principal, model_id: str, payload: dict) -> Admission:
        """Bounds, max_tokens caps and the key's and model's rate/concurrency limits (400 / 429)."""
        ring = self.keys.current()
        model_limits = ring.limits_for_model(model_id)
        try:
            check_bounds(payload, self.bounds)
            caps = [lim.max_tokens for lim in (principal.limits, *model_limits) if lim.max_tokens]
            check_max_tokens(payload, caps)
        except BoundError as err:
            raise BadRequest(err.message, param=err.param) from None
        scoped = [(f"key {principal.name}", principal.limits)] if principal is not ANONYMOUS else []
        scoped += [(f"model {model_id}#{i}", lim) for i, lim in enumerate(model_limits)]
        try:
            return self.book.admit(scoped)
        except OverLimit as exc:
            raise RateLimited(
                f"rate limit reached ({exc.message}); retry after {exc.retry_after}s",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None


def audit(principal: Principal, action: str, model_id: str, result: str) -> None:
    """One JSON line per management action: the key's name, never the key."""
    audit_log.info(
        "%s %s by %s: %s",
        action,
        model_id,
        principal.name,
        result,
        extra={
            "audit": True,
            "key_name": principal.name,
            "action": action,
            "model": model_id,
            "result": result,
        },
    )
