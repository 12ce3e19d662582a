"""The load generator: a fixed number of requests at a fixed concurrency, after a warm-up, over async httpx.

Each request records its status, total latency and, for streams, the time to its first body byte (TTFB).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: int = 0
    transport_errors: int = 0
    wall: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors

    @property
    def errors(self) -> int:
        return self.transport_errors + sum(n for s, n in self.statuses.items() if s >= 400)

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def summary(self) -> dict[str, float]:
        return {"p50": percentile(self.latencies, 50), "p99": percentile(self.latencies, 99),
                "ttfb_p50": percentile(self.ttfb, 50), "ttfb_p99": percentile(self.ttfb, 99),
                "mean": statistics.fmean(self.latencies) if self.latencies else float("nan"),
                "rps": self.rps, "errors": float(self.errors), "wall": self.wall}


async def _one(client: httpx.AsyncClient, path: str, body: dict[str, Any], stream: bool, out: LoadResult) -> None:
    started = time.perf_counter()
    try:
        if stream:
            async with client.stream("POST", path, json={**body, "stream": True}) as resp:
                first = None
                async for _ in resp.aiter_raw():
                    if first is None:
                        first = time.perf_counter() - started
                status, headers = resp.status_code, resp.headers
            if first is not None and status < 400:
                out.ttfb.append(first)
        else:
            resp = await client.post(path, json=body)
            status, headers = resp.status_code, resp.headers
    except httpx.HTTPError:
        out.transport_errors += 1
        return
    out.statuses[status] += 1
    if status < 400:
        out.latencies.append(time.perf_counter() - started)
    elif "retry-after" in headers:
        out.retry_after += 1


async def run_load(url: str, path: str, body: dict[str, Any], *, requests: int, concurrency: int,
                   warmup: int = 0, stream: bool = False, request_timeout: float = 120.0) -> LoadResult:
    """``requests`` requests, ``concurrency`` at a time, after ``warmup`` unrecorded ones."""
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits) as client:
        scratch = LoadResult()
        await _drive(client, path, body, warmup, min(concurrency, max(1, warmup)), stream, scratch)
        result = LoadResult()
        started = time.perf_counter()
        await _drive(client, path, body, requests, concurrency, stream, result)
        result.wall = time.perf_counter() - started
    return result


async def _drive(client: httpx.AsyncClient, path: str, body: dict[str, Any], n: int, concurrency: int,
                 stream: bool, out: LoadResult) -> None:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(client, path, body, stream, out)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


async def burst(url: str, path: str, body: dict[str, Any], n: int, request_timeout: float) -> LoadResult:
    """``n`` requests sent at once (one connection each); ``wall`` is the time until the last answer."""
    limits = httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2)
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits) as client:
        result = LoadResult()
        started = time.perf_counter()
        await asyncio.gather(*(_one(client, path, body, False, result) for _ in range(n)))
        result.wall = time.perf_counter() - started
    return result
