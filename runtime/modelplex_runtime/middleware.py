"""ASGI middleware: request ids, the body-size limit, per-endpoint request counts and access logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from modelplex_runtime.errors import error_body
from modelplex_runtime.metrics import RuntimeMetrics

log = logging.getLogger("modelplex_runtime.access")

KNOWN_ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/tokenize", "/detokenize",
     "/health", "/ready", "/metrics"}
)


class BodyTooLarge(Exception):
    pass


class RequestMiddleware:
    def __init__(self, app: Any, metrics: RuntimeMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope["path"]
        endpoint = path if path in KNOWN_ENDPOINTS else "other"
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        limit = self.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                await self._too_large(send_wrapper, declared)
                return
            received = 0

            async def limited_receive() -> dict[str, Any]:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge()
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except BodyTooLarge:
                if not status["sent"]:
                    await self._too_large(send_wrapper, received)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, code=str(status["code"])).inc()
            if endpoint not in ("/health", "/metrics", "/ready"):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": path,
                        "status": status["code"],
                        "duration_s": round(time.perf_counter() - started, 4),
                    },
                )

    async def _too_large(self, send: Any, size: int) -> None:
        body = json.dumps(
            error_body(
                f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes",
                type="invalid_request_error",
                code="request_too_large",
            )
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
