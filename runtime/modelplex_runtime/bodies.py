"""Reading a JSON request body safely, before FastAPI validates it against the endpoint's model.

Hostile bodies get a 4xx in the OpenAI error shape, never a 500: a media type other than JSON (or
none) is a 415; a body nested deeper than ``MAX_DEPTH`` (100k-deep arrays made ``json`` raise
RecursionError), invalid JSON or UTF-8, and strings holding lone surrogates (``"\\ud800"``, which the
tokenizer cannot encode) are 400s naming where they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from modelplex_runtime.errors import APIError, bad_request

MAX_DEPTH = 64


def parse_json_body(body: bytes, content_type: str | None) -> Any:
    """The parsed body, or an APIError (415/400) saying what is wrong with it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = f"Content-Type {media!r}" if media else "no Content-Type"
        raise APIError(415, f"request bodies are JSON: send Content-Type: application/json (got {shown})",
                       code="unsupported_media_type")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the body is not valid UTF-8 (byte {exc.start})", code="invalid_json") from None
    _check_depth(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                          code="invalid_json") from None
    except RecursionError:  # pragma: no cover - _check_depth stops these first
        raise bad_request(f"the body is nested more than {MAX_DEPTH} levels deep", code="invalid_json") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        where = _surrogate_path(value) or "body"
        raise bad_request(f"{where}: the string holds a lone UTF-16 surrogate (such as \\ud800), "
                          "which is not valid Unicode", param=where, code="invalid_unicode") from None
    return value


def _check_depth(text: str) -> None:
    """Reject deep nesting before parsing (the parser recurses per level). Brackets inside strings are
    skipped, so only real structure counts."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise bad_request(f"the body is nested more than {MAX_DEPTH} levels deep", code="invalid_json")
        elif ch in "]}":
            depth -= 1


def _surrogate_path(value: Any, path: str = "") -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or None
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_path(key, path) if isinstance(key, str) else None
            if found is not None:
                return found or path
            found = _surrogate_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


class JSONBodyRoute(APIRoute):
    """A route whose JSON body is read by ``parse_json_body`` before FastAPI validates it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method == "POST":
                try:
                    raw = await request.body()
                except ClientDisconnect:  # the client left before sending its body: nothing to answer
                    return Response(status_code=499)
                value = parse_json_body(raw, request.headers.get("content-type"))
                # Starlette's Request.json() caches here; FastAPI then validates this value, unparsed again.
                request._json = value
            return await handler(request)

        return checked
