"""Request shapes for type checkers and editors; plain dicts at run time (OpenAI's field names)."""

from __future__ import annotations

from typing import Any, Required, TypedDict


class ChatMessage(TypedDict, total=False):
    role: Required[str]
    content: Required[str | list[dict[str, Any]] | None]
    name: str


class ChatCompletionRequest(TypedDict, total=False):
    """``ChatCompletionRequest(messages=[{"role": "user", "content": "Hi"}])`` builds the dict."""

    messages: Required[list[ChatMessage]]
    model: str
    max_tokens: int
    max_completion_tokens: int
    temperature: float
    top_p: float
    stop: str | list[str]
    seed: int
    n: int
    presence_penalty: float
    frequency_penalty: float
    logprobs: bool
    top_logprobs: int
    response_format: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    stream_options: dict[str, Any]


class CompletionRequest(TypedDict, total=False):
    prompt: Required[str | list[str]]
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | list[str]
    seed: int
    n: int
    echo: bool
    logprobs: int


class EmbeddingRequest(TypedDict, total=False):
    input: Required[str | list[str]]
    model: str
    encoding_format: str
    dimensions: int


class ResponseRequest(TypedDict, total=False):
    """OpenAI's Responses API request (``Client.create_response``)."""

    input: Required[str | list[dict[str, Any]]]
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    parallel_tool_calls: bool
    text: dict[str, Any]
    max_output_tokens: int
    temperature: float
    top_p: float
    store: bool
    previous_response_id: str
    metadata: dict[str, str]


class MessageRequest(TypedDict, total=False):
    """Anthropic's Messages API request (``Client.create_message``; ``count_message_tokens`` takes the
    same without ``max_tokens``)."""

    messages: Required[list[dict[str, Any]]]
    max_tokens: int
    model: str
    system: str | list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any]
    stop_sequences: list[str]
    temperature: float
    top_p: float
    top_k: int
    metadata: dict[str, Any]
