"""Chat-completion streams as a runtime sends them, for the translation tests, and ways to cut them."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [choice],
    }


def chat_completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> bytes:
    """A whole (non-streamed) chat completion as a runtime answers it."""
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "tiny",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10},
    }
    return json.dumps(body).encode()


def sse(payloads: list[dict[str, Any] | str]) -> bytes:
    out = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out.append(f"data: {data}\n\n")
    return "".join(out).encode()


def chat_stream(
    texts: list[str] = (),  # type: ignore[assignment]
    calls: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    finish: str = "stop",
    usage: tuple[int, int] | None = (7, 5),
    done: bool = True,
    **choice_extra: Any,
) -> bytes:
    """A stream: a role chunk, the text pieces, then each tool call (id, name, argument fragments)."""
    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for text in texts]
    for index, (call_id, name, fragments) in enumerate(calls):
        first = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [first]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]}) for f in fragments]
    events.append(chunk({}, finish, **choice_extra))
    if usage is not None:
        prompt, completion = usage
        total = prompt + completion
        events.append(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total},
            }
        )
    if done:
        events.append("[DONE]")
    return sse(events)


def splits(data: bytes, count: int = 40, seed: int = 0) -> Iterator[list[bytes]]:
    """``data`` cut into pieces: every single cut point, then ``count`` random multi-cuts (bytes)."""
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    rng = random.Random(seed)
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(2, 30))))
        bounds = [0, *cuts, len(data)]
        yield [data[a:b] for a, b in itertools.pairwise(bounds)]


def translate(make: Callable[[], Any], pieces: list[bytes]) -> bytes:
    """Feed ``pieces`` to a fresh stream translator, then end it."""
    translator = make()
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


_IDS = re.compile(r"\b(resp|msg|fc|call)_[0-9a-f]{32}\b")


def normalized(data: bytes | str) -> str:
    """Generated ids replaced by their order of appearance, so two translations compare equal."""
    text = data.decode() if isinstance(data, bytes) else data
    seen: dict[str, str] = {}
    return _IDS.sub(lambda m: seen.setdefault(m.group(0), f"{m.group(1)}_#{len(seen)}"), text)


def events(data: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, payload) of each event of an SSE body we wrote (comments skipped)."""
    out = []
    for block in data.decode().split("\n\n"):
        name, payload = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                payload = json.loads(line.removeprefix("data: "))
        if payload is not None:
            out.append((name, payload))
    return out
