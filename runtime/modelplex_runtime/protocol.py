"""OpenAI request bodies (unknown fields tolerated) and the pure decisions made on them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelplex_runtime.engine_api import SamplingParams
from modelplex_runtime.errors import bad_request


class _Body(BaseModel):
    # OpenAI clients send fields we do not use (user, metadata, ...): accept and ignore them.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Sampling(_Body):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    ignore_eos: bool | None = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool | None = False


class EmbeddingRequest(_Body):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1)


class TokenizeRequest(_Body):
    text: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Body):
    tokens: list[int]
    skip_special_tokens: bool = True


def resolve_model_name(requested: str | None, served_name: str, pipeline_name: str) -> None:
    """Accept the served name, the pipeline name, "default" or nothing; else a 404 naming what is served."""
    from modelplex_runtime.errors import APIError

    if requested in (None, "", "default", served_name, pipeline_name):
        return
    raise APIError(
        404,
        f"model {requested!r} is not served here; this runtime serves {served_name!r}",
        code="model_not_found",
        param="model",
    )


def check_context(prompt_len: int, max_tokens: int | None, max_model_len: int) -> int:
    """The number of tokens to generate; 400 naming both lengths when the request cannot fit."""
    if prompt_len == 0:
        # A model cannot continue nothing (no BOS token, an empty template): found by fuzzing.
        raise bad_request("the prompt is empty (0 tokens); send some text to continue", param="messages")
    if prompt_len >= max_model_len:
        raise bad_request(
            f"the prompt is {prompt_len} tokens but this model's context is {max_model_len} tokens "
            "(leaving no room to generate)",
            param="messages",
            code="context_length_exceeded",
        )
    room = max_model_len - prompt_len
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise bad_request(
            f"the prompt is {prompt_len} tokens and max_tokens is {max_tokens}, together more than this "
            f"model's context of {max_model_len} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return max_tokens


def sampling_params(req: _Sampling, max_tokens: int) -> SamplingParams:
    if req.n is not None and req.n > 1:
        raise bad_request("n > 1 is not supported; send n separate requests", param="n")
    if req.logprobs:
        raise bad_request("logprobs are not supported by this runtime", param="logprobs")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > 16:
        raise bad_request("at most 16 stop strings are supported", param="stop")
    top_k = req.top_k if req.top_k is not None and req.top_k > 0 else 0
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=top_k,
        seed=req.seed,
        stop=stop,
        ignore_eos=bool(req.ignore_eos),
    )


def completion_prompt(prompt: str | list[str] | list[int]) -> str | list[int]:
    """One prompt per request: a string or a list of token ids."""
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise bad_request("prompt must not be empty", param="prompt")
    if all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise bad_request("several prompts in one request are not supported; send one per request", param="prompt")
        return prompt[0]  # type: ignore[return-value]
    return list(prompt)  # type: ignore[arg-type]


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]


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
