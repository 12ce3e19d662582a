"""A minimal fixed-response OpenAI-compatible server: the backend that isolates a proxy's own cost.

    python -m benchmarks.stub_backend --port P [--load-delay S] [--tokens N]

It takes the runtime's flags (``--host --port --model-json --served-model-name``) so the modelplex router
can start it as its runtime command. Plain asyncio streams, no web framework: it starts in a few tens of
milliseconds and spends as little CPU per request as Python allows, so what a path adds is the proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

_OK = "200 OK"


def _completion(model: str, chat: bool) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": "ok"}
    else:
        choice["text"] = "ok"
    return {"id": "stub-1", "object": "chat.completion" if chat else "text_completion", "created": 0,
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _chunk(model: str, chat: bool, i: int) -> bytes:
    delta = {"index": 0, "finish_reason": None}
    delta.update({"delta": {"content": f"t{i} "}} if chat else {"text": f"t{i} "})
    body = {"id": "stub-1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
            "model": model, "choices": [delta]}
    return f"data: {json.dumps(body)}\n\n".encode()


class Stub:
    def __init__(self, served: str, tokens: int, load_delay: float) -> None:
        self.served = served
        self.tokens = tokens
        self.ready_at = time.monotonic() + load_delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                length = int(headers.get("content-length", "0"))
                body = json.loads(await reader.readexactly(length)) if length else {}
                await self.respond(writer, method, path.split("?", 1)[0], body)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def respond(self, writer: asyncio.StreamWriter, method: str, path: str, body: dict[str, object]) -> None:
        if path in ("/ready", "/health", "/health/readiness", "/health/liveliness"):
            ready = time.monotonic() >= self.ready_at
            return await _send(writer, _OK if ready else "503 Service Unavailable",
                               {"status": "ready" if ready else "loading"})
        if path == "/v1/models":
            return await _send(writer, _OK, {"object": "list", "data": [{"id": self.served, "object": "model"}]})
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            return await _send(writer, "404 Not Found", {"error": {"message": "not found", "type": "invalid_request_error",
                                                                   "code": "not_found"}})
        chat = path.endswith("chat/completions")
        model = str(body.get("model") or self.served)
        if not body.get("stream"):
            return await _send(writer, _OK, _completion(model, chat))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in [*(_chunk(model, chat, i) for i in range(self.tokens)), b"data: [DONE]\n\n"]:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _send(writer: asyncio.StreamWriter, status: str, payload: dict[str, object]) -> None:
    data = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode()
                 + data)
    await writer.drain()


async def serve(host: str, port: int, stub: Stub) -> None:
    server = await asyncio.start_server(stub.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-json", default=None, help="accepted for the runtime's CLI; ignored")
    parser.add_argument("--served-model-name", default="stub")
    parser.add_argument("--tokens", type=int, default=5, help="chunks per streamed answer")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds before /ready answers 200")
    args, _unknown = parser.parse_known_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, Stub(args.served_model_name, args.tokens, args.load_delay)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
