"""The request models of the translated APIs: one 400 message naming what is wrong, and the OpenAPI
request schema (for clients and the fuzzer) generated from the same pydantic model.

The models are strict, as the APIs they stand for: an unknown field is refused by name, and a value of
the wrong type is refused rather than converted (``"max_tokens": "8"``, ``"store": "yes"`` and
``"max_tokens": true`` are 400s, not 8, True and 1). A body nested deeper than ``MAX_NESTING`` levels is
refused before validation: no request of these APIs needs more, and the translation copies and echoes
what it holds (tool schemas, tool inputs) into the chat completion, the stored Response and the
streamed events.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelplex_router.errors import BadRequest
from modelplex_router.request_body import check_nesting

M = TypeVar("M", bound=BaseModel)

MAX_NESTING = 128
"""The deepest a translated API's body may nest objects and arrays (the body itself is level 1)."""


class RequestModel(BaseModel):
    """A part of a request: no unknown fields, no type conversions."""

    model_config = ConfigDict(extra="forbid", strict=True)


_TYPE_NAMES = ("str", "int", "float", "bool", "dict", "list", "none", "is-instance")


def _where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the client wrote it (``input[2].content``), without the names
    pydantic gives to the branches of a union (``str``, ``list[...]``, ``function-after[...]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" not in part and part not in _TYPE_NAMES:
            out += f".{part}" if out else part
    return out


def _problem(errors: list[Any]) -> tuple[str, str]:
    """The most specific problem: a union reports one per branch, the deepest names the real one."""
    error = max(errors, key=lambda e: len(_where(tuple(e.get("loc", ())))))
    where = _where(tuple(error.get("loc", ())))
    return where, f"{where or 'body'}: {error.get('msg', 'invalid')}"


def parse(model: type[M], payload: dict[str, Any], unsupported: str = "") -> M:
    """``payload`` as ``model``; BadRequest naming every unknown field, or the first other problem."""
    check_nesting(payload, MAX_NESTING)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    extra = sorted({_where(tuple(e["loc"])) for e in errors if e.get("type") == "extra_forbidden"})
    if extra:
        names = ", ".join(repr(name) for name in extra)
        raise BadRequest(f"unsupported field(s): {names}{unsupported}", param=extra[0]) from None
    param, message = _problem(errors)
    raise BadRequest(message, param=param or None) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route: ``model``'s JSON schema, with its definitions inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    body = inline(schema)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def check_tool_choice(named: str | None, required: bool, tools: list[str]) -> None:
    """A tool choice must be able to happen: the named tool exists, a required call has tools."""
    if named is not None and named not in tools:
        given = ", ".join(tools) or "none"
        raise BadRequest(
            f"tool_choice names the tool {named!r}, which is not in tools (given: {given})",
            param="tool_choice",
        )
    if required and not tools:
        raise BadRequest("tool_choice asks for a tool call, but no tools are given", param="tool_choice")
