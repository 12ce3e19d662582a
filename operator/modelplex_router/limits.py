"""Request limits: per-minute windows, concurrency counters and request-shape bounds (pure, clock injected)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Limits of one key or one model; None = no limit."""

    model_config = ConfigDict(extra="forbid")

    concurrent: int | None = Field(default=None, ge=1, description="Requests in flight at once.")
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute (sliding 60 s window).")
    max_tokens: int | None = Field(default=None, ge=1, description="Largest max_tokens a request may ask.")


class OverLimit(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds, per name."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        import time

        self.window = window
        self.clock = clock or time.monotonic
        self._events: dict[str, deque[float]] = {}

    def retry_after(self, name: str, limit: int) -> int:
        """0 when one more event is allowed now, else the whole seconds until it is."""
        now = self.clock()
        events = self._events.setdefault(name, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < limit:
            return 0
        return max(1, math.ceil(events[0] + self.window - now))

    def record(self, name: str) -> None:
        self._events.setdefault(name, deque()).append(self.clock())


class Concurrency:
    """In-flight counters per name."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)

    def add(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def remove(self, name: str) -> None:
        left = self._counts.get(name, 0) - 1
        if left > 0:
            self._counts[name] = left
        else:
            self._counts.pop(name, None)


@dataclass
class Admission:
    """Counters taken for one request; ``release`` gives them back (once)."""

    concurrency: Concurrency
    names: list[str]
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            for name in self.names:
                self.concurrency.remove(name)


class LimitBook:
    """All rate and concurrency state of the router; ``admit`` checks every applicable limit at once."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.window = SlidingWindow(60.0, clock)
        self.concurrency = Concurrency()

    def admit(self, scoped: list[tuple[str, Limits]]) -> Admission:
        """``scoped``: (counter name, limits) pairs, e.g. ("key:team-a", ...), ("model:tiny", ...).
        Raises OverLimit (nothing counted) when any is exceeded; otherwise counts the request everywhere."""
        for name, lim in scoped:
            if lim.concurrent is not None and self.concurrency.count(name) >= lim.concurrent:
                raise OverLimit(f"{name}: more than {lim.concurrent} concurrent requests", 1)
            if lim.rpm is not None:
                wait = self.window.retry_after(name, lim.rpm)
                if wait:
                    raise OverLimit(f"{name}: more than {lim.rpm} requests per minute", wait)
        taken: list[str] = []
        for name, lim in scoped:
            if lim.rpm is not None:
                self.window.record(name)
            if lim.concurrent is not None:
                self.concurrency.add(name)
                taken.append(name)
        return Admission(self.concurrency, taken)


@dataclass(frozen=True)
class RequestBounds:
    max_messages: int
    max_images: int
    max_input_chars: int


class BoundError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    if isinstance(value, dict):
        return _text_length(value.get("text")) if value.get("type", "text") == "text" else 0
    return 0


def _image_parts(messages: list[Any]) -> int:
    count = 0
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            count += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return count


def check_bounds(payload: dict[str, Any], bounds: RequestBounds) -> None:
    """BoundError naming the field when the request has too many messages or images or too much text."""
    messages = payload.get("messages")
    chars = 0
    if isinstance(messages, list):
        if len(messages) > bounds.max_messages:
            raise BoundError(
                f"{len(messages)} messages given; at most {bounds.max_messages} are accepted", "messages"
            )
        images = _image_parts(messages)
        if images > bounds.max_images:
            raise BoundError(f"{images} images given; at most {bounds.max_images} are accepted", "messages")
        chars += sum(_text_length(m.get("content")) for m in messages if isinstance(m, dict))
    for name in ("prompt", "input"):
        chars += _text_length(payload.get(name))
    if chars > bounds.max_input_chars:
        field_name = (
            "messages" if isinstance(messages, list) else "prompt" if "prompt" in payload else "input"
        )
        raise BoundError(
            f"the input has {chars} characters; at most {bounds.max_input_chars} are accepted", field_name
        )


def sequences(payload: dict[str, Any]) -> int:
    """How many sequences a request generates: ``n`` per prompt, times the prompts of a text completion."""
    n = payload.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        count *= len(prompt)
    return count


def check_max_tokens(payload: dict[str, Any], caps: list[int]) -> None:
    """BoundError when the tokens a request may generate, ``max_tokens`` / ``max_completion_tokens`` times
    its sequences (``n`` x prompts), are above the smallest cap (rejected, not clamped: a silently shortened
    answer is harder to notice than a 400)."""
    if not caps:
        return
    cap = min(caps)
    many = sequences(payload)
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value * many > cap:
            shown = f"{name}={value}" if many == 1 else f"{name}={value} x {many} sequences"
            raise BoundError(f"{shown} is above the limit of {cap} tokens for this key or model", name)
