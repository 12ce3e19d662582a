"""OpenAI Responses API requests (``POST /v1/responses``) and their translation to a chat completion.

What maps: ``input`` (a string, or message / function_call / function_call_output items), and
``instructions`` become messages (``developer`` becomes ``system``, which every chat template knows);
function ``tools``, ``tool_choice`` and ``parallel_tool_calls`` keep their meaning; ``text.format``
becomes ``response_format``; ``max_output_tokens`` becomes ``max_tokens``. Everything else the API
has (hosted tools, reasoning, background runs, ...) is refused with a 400 naming it, never dropped.
Accepted without effect: ``prompt_cache_key`` (no prompt cache to steer), ``user`` and
``safety_identifier`` (echoed back only).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from modelplex_router.apis import schema
from modelplex_router.apis.chat import chat_payload
from modelplex_router.errors import BadRequest

HOSTED_TOOLS = (
    "web_search",
    "web_search_preview",
    "file_search",
    "computer",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "tool_search",
)
ITEM_TYPES = ("message", "function_call", "function_call_output")


class InputText(schema.RequestModel):
    type: Literal["input_text"]
    text: str


class InputImage(schema.RequestModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None


class OutputText(schema.RequestModel):
    """An earlier answer's text, given back as input (``response.output`` items can be replayed)."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class Refusal(schema.RequestModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | OutputText | Refusal, Field(discriminator="type")]


class MessageItem(schema.RequestModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(schema.RequestModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(schema.RequestModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Annotated[InputText | InputImage, Field(discriminator="type")]]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


def _item_type(value: Any) -> str | None:
    return value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]


class FunctionTool(schema.RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(schema.RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormatText(schema.RequestModel):
    type: Literal["text"]


class TextFormatJSONObject(schema.RequestModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(schema.RequestModel):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(schema.RequestModel):
    format: (
        Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema, Field(discriminator="type")]
        | None
    ) = None


class StreamOptions(schema.RequestModel):
    include_obfuscation: Literal[False] | None = None


class ResponsesRequest(schema.RequestModel):
    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    truncation: Literal["disabled"] | None = None
    background: Literal[False] | None = None
    service_tier: Literal["auto", "default"] | None = None
    include: list[str] | None = Field(default=None, max_length=0)
    top_logprobs: Literal[0] | None = None


OPENAPI_BODY = schema.openapi_body(ResponsesRequest)


def parse_request(payload: dict[str, Any]) -> ResponsesRequest:
    """The request, checked; a 400 naming the problem (hosted tools and unknown items by name)."""
    _check_tools(payload.get("tools"))
    _check_items(payload.get("input"))
    req = schema.parse(ResponsesRequest, payload, " (modelplex serves local models through chat completions)")
    names = [tool.name for tool in req.tools or ()]
    schema.check_tool_choice(
        req.tool_choice.name if isinstance(req.tool_choice, NamedFunction) else None,
        req.tool_choice == "required",
        names,
    )
    return req


def _check_tools(tools: Any) -> None:
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            hosted = kind in HOSTED_TOOLS or kind.startswith(("web_search", "computer"))
            what = "the OpenAI-hosted tool" if hosted else "the tool type"
            raise BadRequest(
                f"tools[{i}]: {what} {kind!r} is not available here: modelplex serves local models, "
                "which can only call the function tools you describe (type 'function')",
                param=f"tools[{i}].type",
            )


def _check_items(items: Any) -> None:
    for i, item in enumerate(items if isinstance(items, list) else ()):
        kind = _item_type(item)
        if isinstance(kind, str) and kind not in ITEM_TYPES:
            raise BadRequest(
                f"input[{i}]: items of type {kind!r} are not supported (supported: {', '.join(ITEM_TYPES)})",
                param=f"input[{i}].type",
            )


# -- translation ------------------------------------------------------------------------------------


def chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Chat message content: text-only parts as one string (every template renders that), else parts."""
    if all(p.get("type") == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _parts(content: str | list[Any], where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, InputText | OutputText):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, Refusal):
            parts.append({"type": "text", "text": part.refusal})
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise BadRequest(
                    f"{where}.content[{j}]: images are sent as image_url (a URL or a data: URL); "
                    "file_id needs OpenAI's file storage",
                    param=f"{where}.content[{j}]",
                )
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail in ("low", "high", "auto"):
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return chat_content(parts)


def input_messages(items: str | list[Any]) -> list[dict[str, Any]]:
    """``input`` as chat messages: function calls join the assistant message before them."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _parts(item.content, where)})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = _parts(item.output, where)
            if not isinstance(output, str):
                raise BadRequest(
                    f"{where}.output: a function call's output must be text here (images are not supported)",
                    param=f"{where}.output",
                )
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text is not None else None
    if isinstance(fmt, TextFormatJSONObject):
        return {"type": "json_object"}
    if isinstance(fmt, TextFormatJSONSchema):
        spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.description is not None:
            spec["description"] = fmt.description
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        return {"type": "json_schema", "json_schema": spec}
    return None


def _chat_tool(tool: FunctionTool) -> dict[str, Any]:
    return {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}


def _chat_tool_choice(choice: str | NamedFunction | None) -> str | dict[str, Any] | None:
    if isinstance(choice, NamedFunction):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def chat_request(req: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completion for ``req`` after ``history`` (the earlier turns of previous_response_id)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    messages += history
    messages += input_messages(req.input)
    return chat_payload(
        req.model,
        messages,
        bool(req.stream),
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        parallel_tool_calls=req.parallel_tool_calls,
        tools=[_chat_tool(tool) for tool in req.tools] if req.tools else None,
        tool_choice=_chat_tool_choice(req.tool_choice),
        response_format=_response_format(req.text),
    )
