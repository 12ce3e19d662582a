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
    echo               answer chat completions with the JSON of the messages received
    hold_streams       a stream sends its first token, then waits (at most 60 s) for ``POST /release``
                       before the rest (a request kept in flight for as long as a test needs)

Chat completions honour ``tools`` with ``tool_choice`` "required" or a named function (one call to
that tool, its arguments made from the tool's parameter schema, streamed in fragments) and
``response_format`` (a JSON object made from the schema), so the router's API translations can be
tested end to end; ``stream_options.include_usage`` adds the usage chunk. ``/tokenize`` counts words.

``/metrics`` counts the chat completions received, as the real runtime names it
(``modelplex_runtime_requests_total{endpoint="/v1/chat/completions"}``), so tests can tell which process
served how many.

Every start appends ``<served name> <pid>`` to FAKE_RUNTIME_EVENTS, and a client disconnect in the
middle of a stream (or of a non-streamed chat completion slowed by token_delay) appends
``disconnect <served name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


def example_of(schema: dict[str, Any]) -> Any:
    """A value of a (simple) JSON schema: what constrained decoding would give."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {key: example_of(sub) for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items") or {})]
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True}.get(kind, None)


def forced_tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call a request with tools and tool_choice "required" or a named function gets."""
    tools, choice = body.get("tools") or [], body.get("tool_choice")
    if not tools or not (choice == "required" or isinstance(choice, dict)):
        return None
    wanted = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    tool = next(t for t in tools if t["function"]["name"] == wanted)
    arguments = json.dumps(example_of(tool["function"].get("parameters") or {"type": "object"}))
    return {"id": "call_fake1", "type": "function", "function": {"name": wanted, "arguments": arguments}}


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

    async def stream(kind: str, body: dict[str, Any]) -> Any:
        call = forced_tool_call(body) if kind == "chat" else None
        try:
            if call:
                texts: list[str] = []
            elif body.get("response_format") or behaviour.get("echo"):
                whole = answer_text(body)
                texts = [whole[: len(whole) // 2], whole[len(whole) // 2 :]]
            else:
                texts = [f"t{i} " for i in range(n_tokens)]
            for i, piece in enumerate(texts):
                if die_after is not None and i >= int(die_after):
                    os.kill(os.getpid(), signal.SIGKILL)
                if token_delay:
                    await asyncio.sleep(token_delay)
                if i == 1 and behaviour.get("hold_streams"):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(released.wait(), 60)
                finish = "stop" if i == len(texts) - 1 else None
                if kind == "chat":
                    choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
                    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": name}
                else:
                    choice = {"index": 0, "text": piece, "finish_reason": finish}
                    chunk = {"id": "c1", "object": "text_completion", "created": 0, "model": name}
                yield f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n"
            if call:
                arguments = call["function"]["arguments"]
                cut = len(arguments) // 2
                pieces = [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    },
                    {"index": 0, "function": {"arguments": arguments[:cut]}},
                    {"index": 0, "function": {"arguments": arguments[cut:]}},
                ]
                for j, piece in enumerate(pieces):
                    finish = "tool_calls" if j == len(pieces) - 1 else None
                    choice = {"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": finish}
                    yield f"data: {json.dumps({'id': 'c1', 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                completion = 1 if call else len(texts)
                usage = {"prompt_tokens": 3, "completion_tokens": completion, "total_tokens": 3 + completion}
                yield f"data: {json.dumps({'id': 'c1', 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            _event(f"disconnect {name}")
            raise

    def text() -> str:
        return " ".join(f"t{i}" for i in range(n_tokens))

    def answer_text(body: dict[str, Any]) -> str:
        if behaviour.get("echo"):
            return json.dumps(body.get("messages"))
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(example_of(fmt.get("json_schema", {}).get("schema", {})))
        if fmt.get("type") == "json_object":
            return json.dumps({"answer": text()})
        return text()

    chats = {"count": 0}
    released = asyncio.Event()

    @app.post("/release")
    async def release() -> dict[str, str]:
        released.set()
        return {"status": "released"}

    @app.get("/metrics")
    async def metrics() -> Response:
        sample = f'modelplex_runtime_requests_total{{endpoint="/v1/chat/completions",code="200"}} {chats["count"]}'
        return Response("# TYPE modelplex_runtime_requests counter\n" + sample + "\n", media_type="text/plain")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        chats["count"] += 1
        body = await request.json()
        if (err := wrong_model(body)) is not None:
            return err
        if behaviour.get("busy_retry_after") is not None:
            busy = {"error": {"message": "the runtime's queue is full", "type": "server_error", "code": "busy"}}
            return JSONResponse(busy, status_code=429, headers={"Retry-After": str(behaviour["busy_retry_after"])})
        if body.get("stream"):
            return StreamingResponse(stream("chat", body), media_type="text/event-stream")
        if token_delay:
            deadline = time.monotonic() + token_delay * n_tokens
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    _event(f"disconnect {name}")
                    return Response(status_code=499)
                await asyncio.sleep(min(0.05, token_delay))
        call = forced_tool_call(body)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else answer_text(body)}
        if call:
            message["tool_calls"] = [call]
        completion = 1 if call else n_tokens
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": name,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": completion, "total_tokens": 3 + completion},
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        if (err := wrong_model(body)) is not None:
            return err
        if body.get("stream"):
            return StreamingResponse(stream("text", body), media_type="text/event-stream")
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
        words = str(body.get("prompt", body.get("text", ""))).split()
        for message in body.get("messages") or ():
            words += [*str(message.get("content") or "").split(), "<turn>"]
        words += [tool["function"]["name"] for tool in body.get("tools") or ()]
        return {"tokens": list(range(len(words))), "count": len(words), "max_model_len": 2048}

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
