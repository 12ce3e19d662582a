"""The HTTP clients that carry requests to the runtimes: a few independent connection pools ("lanes").

httpcore's pool scans every connection it holds on each request, and polls each idle socket to learn
whether the runtime closed it, so its cost per request grows with the pool. Profiled at 16 concurrent
requests through the router, that scan was about a fifth of the router's CPU. Requests spread
round-robin over a few pools keep each pool, and so each scan, small; a lane's connections still
serve every runtime.
"""

from __future__ import annotations

import itertools

import httpx


class UpstreamClients:
    def __init__(self, lanes: int, max_connections: int, connect_timeout: float) -> None:
        lanes = max(1, lanes)
        # ceil: the lanes together allow at least max_connections
        self.per_lane = per_lane = max(1, -(-max_connections // lanes))
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(connect=connect_timeout, read=None, write=None, pool=None),
                limits=httpx.Limits(max_connections=per_lane, max_keepalive_connections=per_lane),
                trust_env=False,
            )
            for _ in range(lanes)
        ]
        self._turn = itertools.cycle(self._clients)

    @property
    def lanes(self) -> int:
        return len(self._clients)

    def next(self) -> httpx.AsyncClient:
        """The client for the next request."""
        return next(self._turn)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
