"""A client's JSON body as the router reads it: what is refused with a 4xx before any runtime sees it.

The router reads only a few fields itself (``model``, ``stream``; the limits read ``messages``,
``max_tokens``); the runtime validates the rest. What the router refuses here is what would otherwise
break the router itself or reach the runtime as something it cannot trust:

* a body that is not declared as JSON (``Content-Type`` missing, ``text/plain``, a form): 415;
* a body that is not UTF-8, invalid JSON, JSON nested too deeply to parse, ``NaN``/``Infinity`` (not JSON), integers longer than
  Python converts, a body that is not an object: 400;
* a string holding a lone UTF-16 surrogate (``"\\ud800"``: no Unicode text can contain it): 400;
* ``model`` or ``stream`` of the wrong type: 400 naming the field.

The translated APIs (``modelplex_router.apis``) also bound how deep a body nests (``check_nesting``),
as they copy its fields into what they send and answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modelplex_router.errors import BadRequest, UnsupportedMediaType

# An escaped surrogate code point anywhere in the raw body: only then is the parsed body walked for a
# lone one (a proper pair decodes to one character outside the BMP).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATES = re.compile("[\ud800-\udfff]")


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` (any parameters) or a ``+json`` type such as ``application/merge-patch+json``."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json_content_type(content_type: str | None) -> None:
    """UnsupportedMediaType (415) unless the body is declared as JSON."""
    if not is_json_media_type(content_type):
        declared = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"the request body must be JSON sent with 'Content-Type: application/json' (got {declared})"
        )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


def parse_json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; BadRequest (400) saying what is wrong otherwise."""
    if not body.strip() and empty_ok:
        return {}
    try:
        # JSON over HTTP is UTF-8 (RFC 8259); json.loads would also take UTF-16/32 and encoded surrogates.
        payload = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except RecursionError:
        raise BadRequest("the request body nests JSON too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers, NaN
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    if _ESCAPED_SURROGATE.search(body):
        try:
            where = _lone_surrogate_at(payload, "")
        except RecursionError:
            raise BadRequest("the request body nests JSON too deeply") from None
        if where is not None:
            raise BadRequest(
                f"the request body holds a lone UTF-16 surrogate at {where or 'the top level'}: "
                "strings must be valid Unicode",
                param=where or None,
            )
    return payload


def _lone_surrogate_at(value: Any, path: str) -> str | None:
    """The path of the first string (or object key) holding a lone surrogate; None when there is none."""
    if isinstance(value, str):
        return path if _SURROGATES.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if _SURROGATES.search(key):
                return here
            found = _lone_surrogate_at(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate_at(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_nesting(payload: dict[str, Any], limit: int) -> None:
    """BadRequest when objects and arrays nest more than ``limit`` levels deep (the body is level 1),
    naming the field where it starts. Walked without recursion, so no depth can overflow the stack."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            where = _deep_field(payload, limit)
            raise BadRequest(f"{where}: JSON nested more than {limit} levels deep", param=where)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


_NAMED_LEVELS = 6
"""How much of a too-deep field's path an error names: past these levels it is only more [0] and .a."""


def _deep_field(payload: dict[str, Any], limit: int) -> str:
    """The path (its first levels) of a value nested more than ``limit`` levels deep in ``payload``."""
    stack: list[tuple[Any, int, str]] = [(payload, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            return path
        if isinstance(value, dict):
            pairs: Any = ((f"{path}.{key}" if path else str(key), child) for key, child in value.items())
        else:
            pairs = ((f"{path}[{i}]", child) for i, child in enumerate(value))
        for here, child in pairs:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, path if depth > _NAMED_LEVELS else here))
    return ""


def check_routing_fields(payload: dict[str, Any]) -> None:
    """BadRequest unless ``model`` is a string (or absent/null) and ``stream`` a boolean (or absent/null)."""
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(
            f"'model' must be a string naming a model, not {type(model).__name__}", param="model"
        )
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, not {type(stream).__name__}", param="stream")


def encode_json(payload: dict[str, Any]) -> bytes:
    """Serialise a (parsed, checked) body again, e.g. after renaming its model: compact UTF-8, so it is
    no larger than what the client sent but for the new name (the runtime has the same body limit)."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except RecursionError:
        raise BadRequest("the request body nests JSON too deeply") from None
