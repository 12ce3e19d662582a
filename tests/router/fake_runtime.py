"""A fake model runtime with the real runtime's CLI and HTTP surface, for fast failure-mode tests.

    python fake_runtime.py --host H --port P --model-json J --served-model-name ID

Behaviour comes from the JSON file named by FAKE_RUNTIME_CONTROL, read at start, keyed by served
name (``"*"`` for every model):

    load_delay         seconds before /ready turns 200
    fail_load          a message: after load_delay, print it on stderr and exit 1
    token_delay        seconds between streamed tokens
    tokens             tokens per completion (default 5)
    die_after_tokens   SIGKILL itself after streaming this many tokens
    busy_retry_after   answer chat completions 429 with this Retry-After (a runtime whose queue is full)

Every start appends ``<served name> <pid>`` to FAKE_RUNTIME_EVENTS, and a client disconnect in the
middle of a stream (or of a non-streamed chat completion slowed by token_delay) appends
``disconnect <served name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def _event(line: str) -> None:
    path = os.environ.get("FAKE_RUNTIME_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _behaviour(name: str) -> dict[str, Any]:
    path = os.environ.get("FAKE_RUNTIME_CONTROL")
    if not path or not Path(path).exists():
        return {}
    control = json.loads(Path(path).read_text())
    return {**control.get("*", {}), **control.get(name, {})}


def build_app(name: str, behaviour: dict[str, Any]) -> FastAPI:
    app = FastAPI()
    started = time.monotonic()

    @app.exception_handler(KeyError)
    @app.exception_handler(TypeError)
    @app.exception_handler(ValueError)
    async def _malformed(_request: Request, exc: Exception) -> JSONResponse:
        # The real runtime validates bodies and answers 400; so does the fake (fuzzed bodies reach it).
        message = f"invalid request (fake runtime): {type(exc).__name__}"
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)
    load_delay = float(behaviour.get("load_delay", 0))
    token_delay = float(behaviour.get("token_delay", 0))
    n_tokens = int(behaviour.get("tokens", 5))
    die_after = behaviour.get("die_after_tokens")

    def ready() -> bool:
        return time.monotonic() - started >= load_delay

    def wrong_model(body: dict[str, Any]) -> JSONResponse | None:
        if body.get("model") != name:
            return JSONResponse(
                {
                    "error": {
                        "message": f"model {body.get('model')!r} is not served here",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        return None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready_endpoint() -> JSONResponse:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "loading"}, status_code=503)

    async def stream(kind: str) -> Any:
        try:
            for i in range(n_tokens):
                if die_after is not None and i >= int(die_after):
                    os.kill(os.getpid(), signal.SIGKILL)
                if token_delay:
                    await asyncio.sleep(token_delay)
                if kind == "chat":
                    chunk = {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": name,
                        "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
                    }
                else:
                    chunk = {
                        "id": "c1",
                        "object": "text_completion",
                        "created": 0,
                        "model": name,
                        "choices": [{"index": 0, "text": f"t{i} ", "finish_reason": None}],
                    }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            _event(f"disconnect {name}")
            raise

    def text() -> str:
        return " ".join(f"t{i}" for i in range(n_tokens))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        if (err := wrong_model(body)) is not None:
            return err
        if behaviour.get("busy_retry_after") is not None:
            busy = {"error": {"message": "the runtime's queue is full", "type": "server_error", "code": "busy"}}
            return JSONResponse(busy, status_code=429, headers={"Retry-After": str(behaviour["busy_retry_after"])})
        if body.get("stream"):
            return StreamingResponse(stream("chat"), media_type="text/event-stream")
        if token_delay:
            deadline = time.monotonic() + token_delay * n_tokens
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    _event(f"disconnect {name}")
                    return Response(status_code=499)
                await asyncio.sleep(min(0.05, token_delay))
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text()}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": n_tokens, "total_tokens": 3 + n_tokens},
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        if (err := wrong_model(body)) is not None:
            return err
        if body.get("stream"):
            return StreamingResponse(stream("text"), media_type="text/event-stream")
        return {
            "id": "c1",
            "object": "text_completion",
            "created": 0,
            "model": name,
            "choices": [{"index": 0, "text": text(), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": n_tokens, "total_tokens": 3 + n_tokens},
        }

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        if (err := wrong_model(body)) is not None:
            return err
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return {
            "object": "list",
            "model": name,
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))
            ],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Any:
        body = await request.json()
        return {"tokens": list(range(len(str(body.get("prompt", "")).split())))}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Any:
        body = await request.json()
        return {"prompt": " ".join(f"t{t}" for t in body.get("tokens", []))}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-json", required=True)
    parser.add_argument("--served-model-name", required=True)
    args = parser.parse_args()
    json.loads(args.model_json)
    name = args.served_model_name
    behaviour = _behaviour(name)
    _event(f"{name} {os.getpid()}")
    if behaviour.get("fail_load"):
        time.sleep(float(behaviour.get("load_delay", 0)))
        print(f"loading {name} ...", file=sys.stderr)
        print(str(behaviour["fail_load"]), file=sys.stderr)
        sys.exit(1)
    uvicorn.run(build_app(name, behaviour), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
