"""Anthropic Messages API requests (``POST /v1/messages``, ``/v1/messages/count_tokens``) and their
translation to a chat completion (or, to count tokens, to the runtime's ``/tokenize``).

What maps: ``system`` (a string or text blocks) becomes the system message; text and image blocks
become message content; ``tool_use`` blocks become an assistant message's ``tool_calls`` and
``tool_result`` blocks become ``tool`` messages (an ``is_error`` result is prefixed ``Error: ``);
``tools``, ``tool_choice`` (``any`` is ``required``; ``disable_parallel_tool_use`` turns
``parallel_tool_calls`` off), ``max_tokens``, ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``
and ``output_config.format`` (``response_format``) keep their meaning. Accepted without effect:
``cache_control`` anywhere (no prompt cache here), ``metadata.user_id``, ``service_tier``,
``thinking: {"type": "disabled"}``. Everything else (server tools, documents, extended thinking, ...)
is refused with a 400 naming it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from modelplex_router.apis import schema
from modelplex_router.apis.chat import chat_payload
from modelplex_router.apis.responses_request import chat_content
from modelplex_router.errors import BadRequest

BLOCK_TYPES = ("text", "image", "tool_use", "tool_result")
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"


CacheControl = dict[str, Any] | None


class TextBlock(schema.RequestModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None
    citations: None = None


class Base64Source(schema.RequestModel):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(schema.RequestModel):
    type: Literal["url"]
    url: str


class ImageBlock(schema.RequestModel):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    cache_control: CacheControl = None


class ToolUseBlock(schema.RequestModel):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(schema.RequestModel):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None
    cache_control: CacheControl = None


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class MessageParam(schema.RequestModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(schema.RequestModel):
    name: str = Field(pattern=TOOL_NAME)
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: CacheControl = None


class ToolChoiceAuto(schema.RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(schema.RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(schema.RequestModel):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(schema.RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingDisabled(schema.RequestModel):
    type: Literal["disabled"]


class OutputFormat(schema.RequestModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(schema.RequestModel):
    format: OutputFormat | None = None


class Metadata(schema.RequestModel):
    user_id: str | None = None


class _Conversation(schema.RequestModel):
    """What a message request and a token count share."""

    model: str | None = None
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingDisabled | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl = None


class MessagesRequest(_Conversation):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None


class CountTokensRequest(_Conversation):
    pass


M = TypeVar("M", bound=_Conversation)


OPENAPI_BODY = schema.openapi_body(MessagesRequest)
COUNT_OPENAPI_BODY = schema.openapi_body(CountTokensRequest)

_UNSUPPORTED = " (modelplex serves local models through chat completions)"


def parse_request(payload: dict[str, Any]) -> MessagesRequest:
    _check(payload)
    return _checked_choice(schema.parse(MessagesRequest, payload, _UNSUPPORTED))


def parse_count_request(payload: dict[str, Any]) -> CountTokensRequest:
    _check(payload)
    return _checked_choice(schema.parse(CountTokensRequest, payload, _UNSUPPORTED))


def _checked_choice(req: M) -> M:
    choice = req.tool_choice
    named = choice.name if isinstance(choice, ToolChoiceTool) else None
    schema.check_tool_choice(named, isinstance(choice, ToolChoiceAny), [t.name for t in req.tools or ()])
    return req


def _check(payload: dict[str, Any]) -> None:
    """Server tools and block types this router cannot serve, by name (clearer than a schema error)."""
    tools = payload.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "custom":
            raise BadRequest(
                f"tools[{i}]: Anthropic's server tool {kind!r} is not available here: modelplex serves local "
                "models, which can only call the tools you describe (name, description, input_schema)",
                param=f"tools[{i}].type",
            )
    messages = payload.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind not in BLOCK_TYPES:
                raise BadRequest(
                    f"messages[{i}].content[{j}]: content blocks of type {kind!r} are not supported "
                    f"(supported: {', '.join(BLOCK_TYPES)})",
                    param=f"messages[{i}].content[{j}].type",
                )


# -- translation ------------------------------------------------------------------------------------


def _image(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    url = source.url if isinstance(source, URLSource) else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: ToolResultBlock, where: str) -> dict[str, Any]:
    if isinstance(block.content, list):
        if any(isinstance(part, ImageBlock) for part in block.content):
            raise BadRequest(f"{where}: images in a tool result are not supported here", param=where)
        text = "\n".join(part.text for part in block.content if isinstance(part, TextBlock))
    else:
        text = block.content or ""
    if block.is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _message(message: MessageParam, i: int) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        user_only = isinstance(block, ToolResultBlock | ImageBlock)
        if (message.role == "user" and isinstance(block, ToolUseBlock)) or (
            message.role == "assistant" and user_only
        ):
            raise BadRequest(
                f"{where}: a {block.type} block cannot be in a {message.role} message", param=where
            )
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        elif isinstance(block, ToolUseBlock):
            function = {"name": block.name, "arguments": json.dumps(block.input)}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif isinstance(block, ToolResultBlock):
            if parts:
                out.append({"role": "user", "content": chat_content(parts)})
                parts = []
            out.append(_tool_result(block, where))
    if message.role == "assistant":
        reply: dict[str, Any] = {"role": "assistant", "content": chat_content(parts) if parts else None}
        if calls:
            reply["tool_calls"] = calls
        elif reply["content"] is None:
            reply["content"] = ""
        out.append(reply)
    elif parts or not out:
        out.append({"role": "user", "content": chat_content(parts)})
    return out


def chat_messages(req: _Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(req.system, str) and req.system:
        messages.append({"role": "system", "content": req.system})
    elif isinstance(req.system, list) and req.system:
        messages.append({"role": "system", "content": "\n".join(block.text for block in req.system)})
    for i, message in enumerate(req.messages):
        messages += _message(message, i)
    return messages


def chat_tools(req: _Conversation) -> list[dict[str, Any]]:
    tools = []
    for tool in req.tools or ():
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.strict is not None:
            function["strict"] = tool.strict
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    if isinstance(choice, ToolChoiceTool):
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type] if choice is not None else None


def chat_request(req: MessagesRequest) -> dict[str, Any]:
    fmt = req.output_config.format if req.output_config else None
    return chat_payload(
        req.model,
        chat_messages(req),
        bool(req.stream),
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=req.stop_sequences or None,
        tools=chat_tools(req) or None,
        tool_choice=_tool_choice(req.tool_choice),
        parallel_tool_calls=False if getattr(req.tool_choice, "disable_parallel_tool_use", None) else None,
        response_format={"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
        if fmt is not None
        else None,
    )


def tokenize_request(req: CountTokensRequest) -> dict[str, Any]:
    """The runtime's ``/tokenize`` body that renders these messages (and tools) as a prompt."""
    return chat_payload(
        req.model, chat_messages(req), False, tools=chat_tools(req) or None, add_generation_prompt=True
    )
