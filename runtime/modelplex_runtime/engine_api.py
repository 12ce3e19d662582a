"""The interface between the HTTP layer and the model engine (torch-free, so the app never imports torch).

The engine runs model compute on its own thread and reports through ``on_event`` callbacks, which the
app routes onto the event loop with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n: int = 1  # sequences sampled from one prompt (one prefill); events carry their ``index``
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logprobs: int | None = None  # None: off; k >= 0: the sampled token's logprob plus the k most likely
    skip_special_tokens: bool = True
    # A compiled grammar from ``Engine.compile_constraint`` (opaque here); each sequence gets its own matcher.
    constraint: Any = field(default=None, compare=False)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    @property
    def processed(self) -> bool:
        """Whether a step's logits need per-sequence work beyond sampling (penalties, bias, masks, logprobs)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias or self.min_tokens or self.logprobs is not None
                    or self.constraint is not None)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log probability and the most likely alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass
class TokenEvent:
    """New text for one sequence of a request; ``finish_reason`` is set on its last event."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None
    index: int = 0  # which of the request's n sequences
    logprobs: list[TokenLogprob] | None = None  # the tokens generated since the previous event


class Prompt(list[int]):
    """Prompt token ids plus model inputs beyond them (a vision model's pixel values)."""

    def __init__(self, ids: list[int], extra: dict[str, Any] | None = None) -> None:
        super().__init__(ids)
        self.extra = extra or {}


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"
    max_batch_size: int = 32
    cpu_threads: int | None = None
    kv_cache_bytes: int | None = None  # the KV cache's bound; None: a share of the device's memory
    max_step_tokens: int = 512  # most tokens in one batch step (decode tokens plus prompt chunks)
    batch_path: str = "auto"  # "auto": packed where the model allows it; "padded": always padded
    cpu_linear: str = "onednn"  # "onednn": f32 and bf16 linears on CPU also hold a oneDNN weight (cpu_linear.py); "torch"
    on_step: Callable[[int], None] | None = None  # called with the number of sequences in each batch step
    stall_seconds: float = 120.0  # an engine thread busy this long without progress is reported unhealthy


@dataclass(frozen=True)
class ModelInfo:
    kind: str
    max_model_len: int
    device: str
    dtype: str
    quantization: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    vocab_size: int | None = None  # rows of the output head (token ids a logit_bias may name)
    tool_call_parser: str | None = None  # the model's tool-call format (set, or inferred from its chat template)
    embedding_dimensions: tuple[int, ...] | None = None  # output sizes `dimensions` may ask for (Matryoshka)


class ConstraintError(ValueError):
    """A response format or tool schema the grammar engine cannot compile (a 400 naming the problem)."""


@dataclass(frozen=True)
class BatchStats:
    """The text batcher's KV cache, for metrics."""

    path: str  # "packed" or "padded"
    kv_cache_bytes: int  # allocated now
    kv_cache_budget_bytes: int | None  # the bound (packed path only)
    kv_cache_tokens: int  # tokens the running sequences hold in it
    preemptions: int  # sequences preempted to stay within the bound, since start


class GenerationHandle(Protocol):
    def cancel(self) -> None: ...


class Engine(Protocol):
    info: ModelInfo

    def tokenize_text(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                      tools: list[dict[str, Any]] | None = None) -> list[int]: ...

    def compile_constraint(self, spec: Any) -> Any:
        """A grammar for ``spec`` (a ``modelplex_runtime.constraints`` spec), compiled once per distinct spec;
        raises ConstraintError for a schema it cannot compile. Slow the first time: call off the event loop."""
        ...

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]
    ) -> GenerationHandle: ...

    def embed(self, texts: list[str], on_done: Callable[[list[list[float]] | BaseException], None],
              dimensions: int | None = None) -> GenerationHandle: ...

    def queue_depth(self) -> int: ...

    def running(self) -> int: ...

    def health(self) -> str | None:
        """None while the engine's thread is alive and making progress; else why it is not."""
        ...

    def batch_stats(self) -> BatchStats | None: ...

    def shutdown(self) -> None: ...
