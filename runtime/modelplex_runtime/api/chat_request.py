"""The chat completion request (OpenAI's schema, strict) and the decisions made on it: which fields are
refused, the messages as the chat template wants them, the response format and the tool plan."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from modelplex_runtime import constraints, protocol
from modelplex_runtime.errors import bad_request
from modelplex_runtime.protocol import Role, StrictBody

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionCall(StrictBody):
    name: str
    arguments: str


class ToolCallIn(StrictBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictBody):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _role_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self


class FunctionDef(StrictBody):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(StrictBody):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(StrictBody):
    name: str


class NamedToolChoice(StrictBody):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(StrictBody):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# OpenAI fields this runtime cannot honour: refused (400 naming the field) when set to anything but null.
REFUSED = {
    "audio": "audio output is not produced by this runtime",
    "functions": "the deprecated functions field is not supported; send tools",
    "function_call": "the deprecated function_call field is not supported; send tool_choice",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this runtime does not steer reasoning effort",
    "verbosity": "this runtime does not steer verbosity",
    "web_search_options": "web search is not available",
}


class ChatCompletionRequest(protocol.SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    # Informational: accepted, they change nothing about the answer.
    metadata: dict[str, str] | None = None
    store: Literal[False] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Refused unless null (see REFUSED).
    audio: Any = None
    functions: Any = None
    function_call: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None

    def refuse_unhonoured(self) -> None:
        for name, reason in REFUSED.items():
            if getattr(self, name) is not None:
                raise protocol.refuse(name, reason)
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")

    @property
    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages for the chat template: ``developer`` is the system role templates know; a tool call's
    arguments become an object (templates render them with ``tojson``)."""
    out = []
    for m in messages:
        d = m.model_dump(exclude_none=True)
        if d["role"] == "developer":
            d["role"] = "system"
        for call in d.get("tool_calls", []):
            try:
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
            except json.JSONDecodeError:
                pass  # leave the text as it is; the template shows what the client sent
        out.append(d)
    return out


def image_parts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m.content, list):
            parts.extend(p for p in m.content if p.get("type") in ("image_url", "input_image", "image"))
    return parts


def validate_content_parts(messages: list[ChatMessage]) -> None:
    for i, m in enumerate(messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                kind = part.get("type")
                if kind == "text" and not isinstance(part.get("text"), str):
                    raise bad_request(f"messages[{i}].content[{j}].text must be a string", param=f"messages.{i}.content")
                if kind not in ("text", "image_url", "input_image", "image"):
                    raise bad_request(
                        f"messages[{i}].content[{j}] has unsupported type {kind!r} (supported: text, image_url)",
                        param=f"messages.{i}.content",
                    )


def response_schema(fmt: ResponseFormat | None) -> constraints.JsonSchema | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return constraints.json_schema({"type": "object"}, "json_object")
    if fmt.json_schema is None:
        raise bad_request("response_format of type json_schema needs json_schema", param="response_format")
    schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {}
    return constraints.json_schema(schema, fmt.json_schema.name)


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for its generation."""

    template_tools: list[dict[str, Any]] | None  # rendered into the prompt by the chat template
    parser: str | None  # parse the answer for calls in this format
    constraint: constraints.ToolCalls | None  # required / named: the answer must be calls


def tool_plan(req: ChatCompletionRequest, parser: str | None) -> ToolPlan:
    if not req.tools:
        if req.tool_choice not in (None, "none"):
            raise bad_request("tool_choice needs tools", param="tool_choice")
        return ToolPlan(None, None, None)
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    choice = req.tool_choice or "auto"
    if choice == "none":
        return ToolPlan(tools, None, None)
    by_name = {t.function.name: t.function for t in req.tools}
    if isinstance(choice, NamedToolChoice) and choice.function.name not in by_name:
        raise bad_request(f"tool_choice names {choice.function.name!r}, which is not among the tools "
                          f"({', '.join(by_name)})", param="tool_choice")
    if parser is None:
        raise bad_request("this model's tool-call format is unknown (its chat template names none of hermes, "
                          "llama3_json, mistral): set tool_call_parser in its entry, or send tool_choice none",
                          param="tools", code="tool_call_parser_unknown")
    if isinstance(choice, NamedToolChoice):
        chosen = [by_name[choice.function.name]]
        parallel = False
    elif choice == "required":
        chosen = list(by_name.values())
        parallel = req.parallel_tool_calls is not False
    else:
        return ToolPlan(tools, parser, None)
    spec = constraints.tool_calls(parser, [(f.name, f.parameters or {"type": "object", "properties": {}})
                                           for f in chosen], parallel)
    return ToolPlan(tools, parser, spec)
