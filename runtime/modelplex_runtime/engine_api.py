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

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass
class TokenEvent:
    """New text for one request; ``finish_reason`` is set on the last event."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None


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
    on_step: Callable[[int], None] | None = None  # called with the batch size of each decode step


@dataclass(frozen=True)
class ModelInfo:
    kind: str
    max_model_len: int
    device: str
    dtype: str
    quantization: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GenerationHandle(Protocol):
    def cancel(self) -> None: ...


class Engine(Protocol):
    info: ModelInfo

    def tokenize_text(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def tokenize_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[TokenEvent], None]
    ) -> GenerationHandle: ...

    def embed(self, texts: list[str], on_done: Callable[[list[list[float]] | BaseException], None]) -> None: ...

    def queue_depth(self) -> int: ...

    def running(self) -> int: ...

    def shutdown(self) -> None: ...
