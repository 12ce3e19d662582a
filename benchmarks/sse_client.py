"""A lean streaming client for the throughput runs: HTTP/1.1 over asyncio streams, one keep-alive
connection per simulated user.

On this machine the load generator shares two cores with the server it measures, so whatever CPU
the client spends comes out of the server's throughput. httpx's streaming client spent about 21% of a
core at concurrency 16 (line splitting, h11 events, a JSON parse per chunk); this one reads the
chunked body as it comes and parses JSON only until the first token and for the final usage chunk
(about 5% of a core). Every server in a comparison is measured with the same client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class StreamingConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and yields the response body as it arrives."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(data)}\r\n\r\n")
        self._writer.write(head.encode() + data)
        status = await self._reader.readline()
        headers: dict[bytes, bytes] = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = self._chunked()
        else:
            chunks = self._fixed(int(headers.get(b"content-length", b"0")))
        if status.split(b" ", 2)[1:2] != [b"200"]:
            text = b"".join([c async for c in chunks]).decode(errors="replace")
            raise RuntimeError(f"{status.decode(errors='replace').strip()}: {text[:300]}")
        async for chunk in chunks:
            yield chunk

    async def _chunked(self) -> AsyncIterator[bytes]:
        assert self._reader is not None
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self._reader.readline()
                return
            yield (await self._reader.readexactly(size + 2))[:-2]

    async def _fixed(self, length: int) -> AsyncIterator[bytes]:
        assert self._reader is not None
        yield await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _first_text(events: bytes) -> bool:
    """Whether any SSE event in ``events`` carries generated text."""
    for event in events.split(b"\n\n"):
        if event.startswith(b"data: {"):
            try:
                choices = json.loads(event[6:]).get("choices") or []
            except ValueError:  # an event cut across two chunks: the next chunk decides
                continue
            if choices and (choices[0].get("text") or (choices[0].get("delta") or {}).get("content")):
                return True
    return False


async def stream_completion(conn: StreamingConnection, body: dict[str, Any]) -> tuple[float | None, int, float]:
    """POST a streaming /v1/completions; (time to first text, completion tokens from usage, total time)."""
    started = time.perf_counter()
    ttft: float | None = None
    body_bytes = bytearray()
    async for chunk in conn.post("/v1/completions", body):
        if ttft is None and _first_text(chunk):
            ttft = time.perf_counter() - started
        body_bytes += chunk
    tokens = 0
    for event in bytes(body_bytes).split(b"\n\n"):
        if b'"usage"' in event and event.startswith(b"data: {"):
            usage = json.loads(event[6:]).get("usage")
            if usage:
                tokens = int(usage.get("completion_tokens") or 0)
    return ttft, tokens, time.perf_counter() - started
