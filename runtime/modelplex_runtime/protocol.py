"""What every OpenAI request body shares, and the pure decisions made on it.

Bodies are strict: no type coercion (``max_tokens: true`` or ``stream: "yes"`` are 400s, not 1 and
True) and no unknown fields. A field the runtime does not honour is refused with a 400 naming it rather
than silently dropped; the few informational fields that change nothing about an answer (``user``,
``metadata``, ...) are accepted and documented in docs/runtime.md. The endpoint families (``api/``) build
their request models from these pieces.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelplex_runtime.engine_api import SamplingParams
from modelplex_runtime.errors import APIError, bad_request

INT64 = 2**63
MAX_STOP_STRINGS = 16


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


class RequestBody(StrictBody):
    model: str | None = None
    # Informational fields: accepted, they change nothing about the answer.
    user: str | None = None


class StreamOptions(StrictBody):
    include_usage: bool = False
    include_obfuscation: bool | None = None

    @field_validator("include_obfuscation")
    @classmethod
    def _no_obfuscation(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("include_obfuscation is not supported (this runtime sends no obfuscation field)")
        return value


class SamplingBody(RequestBody):
    """Fields of chat and text completions that shape generation."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    # Extensions (vLLM's names).
    top_k: int | None = Field(default=None, ge=-1)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    min_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[int] | None = Field(default=None, max_length=64)
    ignore_eos: bool | None = False
    skip_special_tokens: bool | None = True

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids; {key!r} is not one")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values lie in [-100, 100]; token {key} has {bias}")
        return value


def resolve_model_name(requested: str | None, served_name: str, pipeline_name: str) -> None:
    """Accept the served name, the pipeline name, "default" or nothing; else a 404 naming what is served."""
    if requested in (None, "", "default", served_name, pipeline_name):
        return
    raise APIError(
        404,
        f"model {requested!r} is not served here; this runtime serves {served_name!r}",
        code="model_not_found",
        param="model",
    )


def check_not_empty(prompt_len: int, param: str = "messages") -> None:
    if prompt_len == 0:
        # A model cannot continue nothing (no BOS token, an empty template): found by fuzzing.
        raise bad_request("the prompt is empty (0 tokens); send some text to continue", param=param)


def check_context(prompt_len: int, max_tokens: int | None, max_model_len: int, param: str = "messages") -> int:
    """The number of tokens to generate; 400 naming both lengths when the request cannot fit."""
    check_not_empty(prompt_len, param)
    if prompt_len >= max_model_len:
        raise bad_request(
            f"the prompt is {prompt_len} tokens but this model's context is {max_model_len} tokens "
            "(leaving no room to generate)",
            param=param,
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


def check_n(n: int, limit: int) -> None:
    if n > limit:
        raise bad_request(f"n={n} is above this runtime's limit of {limit} sequences per request "
                          "(its --max-batch-size)", param="n")


def sampling_params(req: SamplingBody, max_tokens: int, vocab_size: int | None, *,
                    logprobs: int | None = None, constraint: Any = None) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    top_k = req.top_k if req.top_k is not None and req.top_k > 0 else 0
    bias: list[tuple[int, float]] = []
    for key, value in (req.logit_bias or {}).items():
        token = int(key)
        if vocab_size is not None and token >= vocab_size:
            raise bad_request(f"logit_bias names token {token}, outside the vocabulary (size {vocab_size})",
                              param="logit_bias")
        bias.append((token, float(value)))
    stop_ids = tuple(req.stop_token_ids or ())
    if vocab_size is not None and any(t < 0 or t >= vocab_size for t in stop_ids):
        raise bad_request(f"stop_token_ids must lie in [0, {vocab_size})", param="stop_token_ids")
    min_tokens = req.min_tokens or 0
    if min_tokens > max_tokens:
        raise bad_request(f"min_tokens={min_tokens} is above max_tokens={max_tokens}", param="min_tokens")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=top_k,
        seed=req.seed,
        stop=stop,
        ignore_eos=bool(req.ignore_eos),
        n=req.n or 1,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        logit_bias=tuple(bias),
        min_tokens=min_tokens,
        stop_token_ids=stop_ids,
        logprobs=logprobs,
        skip_special_tokens=req.skip_special_tokens is not False,
        constraint=constraint,
    )


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def refuse(param: str, reason: str) -> APIError:
    return bad_request(f"{param} is not supported: {reason}", param=param, code="unsupported_parameter")


Role = Literal["system", "developer", "user", "assistant", "tool"]
