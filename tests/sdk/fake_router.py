"""A small in-process stand-in for the router's HTTP API, served by uvicorn on a loopback port.

It answers like the router (model list with status, default model, unload/reload/status, OpenAI
endpoints with SSE streaming and ``: loading`` comments, tokenize/detokenize) and records every request
body, so tests can check what the SDK and the CLI send. A few model ids trigger the router's errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

# Model ids with a special behaviour.
MISSING = "missing"  # 404 like an unknown model (any id not in the table behaves the same)
SLOW = "slow"  # 503 with Retry-After: the load wait timed out
BUSY = "busy"  # 429: too many requests waiting
BROKEN = "broken"  # its load fails
CUT = "cut"  # the stream stops before [DONE]
MIDFAIL = "midfail"  # the stream sends an error event after one chunk
API_KEY_MODEL = "secret"  # answers 401 unless the request carried "Bearer sesame"


def _error(
    status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status, headers=headers)


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The fake model's answer: it echoes the last user message and counts the turns it saw."""
    users = [m for m in messages if m.get("role") == "user"]
    return f"echo {users[-1]['content']} (turn {len(users)})" if users else "hello"


@dataclass
class FakeRouter:
    statuses: dict[str, str] = field(
        default_factory=lambda: {
            "tiny": "loaded",
            "other": "unloaded",
            "embed": "loaded",
            SLOW: "reloading",
            BUSY: "loaded",
            BROKEN: "failed",
            CUT: "loaded",
            MIDFAIL: "loaded",
            API_KEY_MODEL: "loaded",
        }
    )
    default: str = "tiny"
    aliases: dict[str, str] = field(default_factory=lambda: {"org/tiny-canonical": "tiny"})
    requests: list[tuple[str, Any]] = field(default_factory=list)
    url: str = ""

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in self.requests if p == path]

    def resolve(self, model: str | None) -> str | None:
        if model is None or model == "default":
            return self.default
        model = self.aliases.get(model, model)
        return model if model in self.statuses else None

    def app(self) -> FastAPI:
        app = FastAPI()

        async def record(request: Request) -> Any:
            body = await request.json() if request.method == "POST" else None
            self.requests.append((request.url.path, body))
            return body

        def model_error(model: str | None, request: Request) -> JSONResponse | None:
            resolved = self.resolve(model)
            if resolved is None:
                return _error(
                    404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found"
                )
            if resolved == SLOW:
                return _error(
                    503,
                    f"model {model} is still loading",
                    "service_unavailable",
                    "model_loading",
                    {"Retry-After": "7"},
                )
            if resolved == BUSY:
                return _error(
                    429,
                    "too many requests are waiting for this model",
                    "rate_limit_error",
                    "too_many_waiting",
                )
            if resolved == BROKEN:
                return _error(
                    500, "model broken failed to load: out of memory", "server_error", "model_load_failed"
                )
            if resolved == API_KEY_MODEL and request.headers.get("authorization") != "Bearer sesame":
                return _error(401, "invalid API key", "authentication_error", "invalid_api_key")
            return None

        @app.get("/v1/models")
        async def models(request: Request) -> Any:
            await record(request)
            data = [{"id": "default", "object": "model", "owned_by": "local"}]
            data += [
                {"id": m, "object": "model", "owned_by": "local", "status": s}
                for m, s in self.statuses.items()
            ]
            for entry in data:
                if entry.get("status") == "failed":
                    entry["error"] = "out of memory"
            return {"object": "list", "data": data}

        @app.get("/v1/models/default")
        async def get_default(request: Request) -> Any:
            await record(request)
            return {"model_id": self.default}

        @app.post("/v1/models/default")
        async def set_default(request: Request) -> Any:
            body = await record(request)
            resolved = self.resolve(body["model_id"])
            if resolved is None:
                return _error(
                    404,
                    f"The model `{body['model_id']}` does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                )
            self.default = resolved
            return {"model_id": resolved}

        @app.post("/v1/models/{action}")
        async def manage(action: str, request: Request) -> Any:
            body = await record(request)
            resolved = self.resolve(body["model_id"])
            if resolved is None:
                return {"model_id": body["model_id"], "status": "not_found"}
            if action == "unload":
                self.statuses[resolved] = "unloaded"
            elif action == "reload":
                if resolved == BROKEN:
                    return {"model_id": resolved, "status": "internal_error", "error": "out of memory"}
                self.statuses[resolved] = "loaded"
            return {"model_id": resolved, "status": self.statuses[resolved]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await record(request)
            if (err := model_error(body.get("model"), request)) is not None:
                return err
            return self._answer(body, reply_for(body["messages"]), "chat.completion")

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            body = await record(request)
            if (err := model_error(body.get("model"), request)) is not None:
                return err
            return self._answer(body, f"{body['prompt']} and so on", "text_completion")

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Any:
            body = await record(request)
            if (err := model_error(body.get("model"), request)) is not None:
                return err
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5]}
                for i, t in enumerate(inputs)
            ]
            return {"object": "list", "model": self.resolve(body.get("model")), "data": data}

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Any:
            body = await record(request)
            if (err := model_error(body.get("model"), request)) is not None:
                return err
            text = body["text"] if "text" in body else " ".join(m["content"] for m in body["messages"])
            tokens = ([1] if body.get("add_special_tokens", True) else []) + [ord(c) for c in text]
            return {"tokens": tokens, "count": len(tokens)}

        @app.post("/detokenize")
        async def detokenize(request: Request) -> Any:
            body = await record(request)
            if (err := model_error(body.get("model"), request)) is not None:
                return err
            skip = body.get("skip_special_tokens", True)
            return {"text": "".join(chr(t) if t > 1 else ("" if skip else "<s>") for t in body["tokens"])}

        return app

    def _answer(self, body: dict[str, Any], text: str, object_name: str) -> Any:
        model = self.resolve(body.get("model"))
        chat = object_name == "chat.completion"
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return {"id": "x1", "object": object_name, "model": model, "choices": [choice]}
        return StreamingResponse(self._sse(model or "", text, chat), media_type="text/event-stream")

    async def _sse(self, model: str, text: str, chat: bool) -> AsyncIterator[str]:
        yield f": loading {model} ...\n\n"
        words = text.split(" ")
        if chat:
            yield (
                "data: "
                + json.dumps(
                    {
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                    }
                )
                + "\n\n"
            )
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            yield "data: " + json.dumps({"object": "chunk", "model": model, "choices": [choice]}) + "\n\n"
            if model == MIDFAIL:
                yield (
                    "data: "
                    + json.dumps(
                        {
                            "error": {
                                "message": "the runtime crashed",
                                "type": "server_error",
                                "code": "model_crashed",
                            }
                        }
                    )
                    + "\n\n"
                )
                return
        finish = (
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "stop"}
        )
        yield "data: " + json.dumps({"object": "chunk", "choices": [finish]}) + "\n\n"
        if model != CUT:
            yield "data: [DONE]\n\n"


@contextmanager
def serve(fake: FakeRouter) -> Iterator[FakeRouter]:
    """Serve ``fake`` on a free loopback port in a thread; stops it on exit."""
    # Port 0: the kernel picks a free port, read back once uvicorn is listening.
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the fake router did not start")
            threading.Event().wait(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def fake_router() -> Iterator[FakeRouter]:
    """A fresh fake router per test (tests change its state)."""
    with serve(FakeRouter()) as running:
        yield running
