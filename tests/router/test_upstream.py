"""The router's upstream clients: requests take the lanes in turn, and the lanes share the connection limit."""

from __future__ import annotations

from modelplex_router.upstream import UpstreamClients


async def test_requests_take_the_lanes_in_turn() -> None:
    clients = UpstreamClients(lanes=3, max_connections=10, connect_timeout=1.0)
    try:
        picked = [clients.next() for _ in range(7)]
        assert clients.lanes == 3
        assert len({id(c) for c in picked[:3]}) == 3  # three different pools
        assert picked[3:6] == picked[:3] and picked[6] is picked[0]  # then round again
        assert clients.per_lane == 4  # 3 x 4 >= 10: the lanes together allow the configured total
    finally:
        await clients.aclose()


async def test_one_lane_is_one_pool_with_the_whole_limit() -> None:
    clients = UpstreamClients(lanes=1, max_connections=1000, connect_timeout=1.0)
    try:
        assert clients.next() is clients.next()
        assert clients.per_lane == 1000
    finally:
        await clients.aclose()
