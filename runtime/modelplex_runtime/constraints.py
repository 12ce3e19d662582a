"""What a constrained sequence must produce, as grammar text for the grammar engine (torch-free).

``response_format`` becomes a ``JsonSchema`` spec; a ``tool_choice`` of ``required`` or a named function
becomes ``ToolCalls``: the model's own tool-call format (``tool_parsers``) around JSON objects whose
``name`` is one of the tools and whose arguments follow that tool's parameter schema. Both compile to
Lark text with embedded ``%json`` schemas that llguidance enforces (``engine/grammar.py``). JSON is
compact: no free-running whitespace, so even a random-weight model closes a small object within a few
dozen tokens instead of spinning on spaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

COMPACT = {"whitespace_flexible": False}

# Where each tool-call format puts its calls. ``marker`` may be a special token of the tokenizer (then the
# grammar names it by id); ``arguments`` is the key holding a call's arguments.
FORMATS: dict[str, dict[str, str]] = {
    "hermes": {"open": "<tool_call>", "close": "</tool_call>", "arguments": "arguments"},
    "llama3_json": {"open": "", "close": "", "arguments": "parameters"},
    "mistral": {"open": "[TOOL_CALLS]", "close": "", "arguments": "arguments"},
}


@dataclass(frozen=True)
class JsonSchema:
    schema_json: str  # canonical JSON text of the schema (the cache key)
    name: str = "response"

    def describe(self) -> str:
        return f"response_format schema {self.name!r}"


@dataclass(frozen=True)
class ToolCalls:
    format: str
    tools: tuple[tuple[str, str], ...]  # (name, parameters schema as JSON text)
    parallel: bool = True

    def describe(self) -> str:
        names = ", ".join(name for name, _ in self.tools)
        return f"the parameters of tool(s) {names}"


ConstraintSpec = JsonSchema | ToolCalls


def json_schema(schema: dict[str, Any] | bool, name: str = "response") -> JsonSchema:
    return JsonSchema(json.dumps(schema, sort_keys=True, separators=(",", ":")), name)


def tool_calls(fmt: str, tools: list[tuple[str, dict[str, Any]]], parallel: bool) -> ToolCalls:
    return ToolCalls(fmt, tuple((n, json.dumps(p, sort_keys=True, separators=(",", ":"))) for n, p in tools), parallel)


def _embedded(schema: Any) -> str:
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": COMPACT}
    elif schema is True:
        schema = {"x-guidance": COMPACT}
    return "%json " + json.dumps(schema)


def _literal(text: str, special_ids: dict[str, int]) -> str:
    if text in special_ids:
        return f"<[{special_ids[text]}]>"
    return json.dumps(text)


def call_schema(fmt: str, tools: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    key = FORMATS[fmt]["arguments"]
    options = [
        {"type": "object", "properties": {"name": {"const": name}, key: json.loads(params)},
         "required": ["name", key], "additionalProperties": False}
        for name, params in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def to_lark(spec: ConstraintSpec, special_ids: dict[str, int]) -> str:
    """Lark text for llguidance; ``special_ids`` maps the tokenizer's special tokens to their ids."""
    if isinstance(spec, JsonSchema):
        return "start: " + _embedded(json.loads(spec.schema_json)) + "\n"
    fmt = FORMATS[spec.format]
    call = call_schema(spec.format, spec.tools)
    if spec.format == "mistral":
        array = {"type": "array", "items": call, "minItems": 1, **({} if spec.parallel else {"maxItems": 1})}
        return f"start: {_literal(fmt['open'], special_ids)} calls\ncalls: {_embedded(array)}\n"
    if spec.format == "llama3_json":
        more = ' ("; " call)*' if spec.parallel else ""
        return f"start: call{more}\ncall: {_embedded(call)}\n"
    more = ' ("\\n" call)*' if spec.parallel else ""
    return (f"start: call{more}\n"
            f"call: {_literal(fmt['open'], special_ids)} \"\\n\" body \"\\n\" {_literal(fmt['close'], special_ids)}\n"
            f"body: {_embedded(call)}\n")
