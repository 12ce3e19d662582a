"""A model as a set of replicas: the board backends publish on, the pool requests are routed from, and the
coordinator and scaler on top of them (with the in-memory FAKE backend: no processes)."""

from __future__ import annotations

import asyncio

import pytest

from modelplex_router.backend import ModelBackend, Replica, Replicas
from modelplex_router.coordinator import ModelCoordinator
from modelplex_router.lifecycle import ModelState
from modelplex_router.metrics import RouterMetrics
from modelplex_router.monitor import declare_hung
from modelplex_router.replica_board import ReplicaBoard
from modelplex_router.replica_pool import ReplicaPool
from modelplex_router.scaler import Scaler, scale_to
from modelplex_router.settings import RouterSettings
from modelplex_spec import ModelEntry, Scaling
from router.memory_backend import MemoryBackend


def entry(**scaling: object) -> ModelEntry:
    return ModelEntry.model_validate({"Plain": {"model_id": "m"}, "alias": "m", "scaling": scaling or None})


def settings(**kw: object) -> RouterSettings:
    return RouterSettings(**{"drain_grace_seconds": 5, "max_wait_seconds": 5, "log_json": False, **kw})


async def test_board_versions_grow_only_on_change_and_wake_waiters() -> None:
    board = ReplicaBoard()
    first = board.publish("m", desired=1, members=[Replica("a", "http://a", False)])
    assert board.publish("m", desired=1, members=[Replica("a", "http://a", False)]) is first
    waiter = asyncio.ensure_future(board.changed("m", first.version, 5))
    await asyncio.sleep(0)
    second = board.publish("m", members=[Replica("a", "http://a", True)])
    assert (await waiter) == second and second.version > first.version and second.ready
    assert (await board.changed("m", second.version, 0.01)) == second  # timeout: unchanged
    assert board.get("other") == Replicas()


def pool_with(*ids: str, ready: bool = True) -> ReplicaPool:
    pool = ReplicaPool("m", 3, 1, RouterMetrics())
    pool.sync(Replicas(len(ids), tuple(Replica(i, f"http://{i}", ready) for i in ids), 1))
    return pool


async def test_pool_follows_the_backend_and_drains_what_goes_away() -> None:
    pool = pool_with("a", "b")
    assert {ep.replica_id for ep in pool.routable()} == {"a", "b"}
    busy = pool.pick(Scaling(), None)
    assert busy is not None
    gone = busy.replica_id
    # The replica with a request on it leaves the backend's set: no new request, kept until it finishes.
    pool.sync(Replicas(1, (Replica("a" if gone == "b" else "b", "http://x", True),), 2))
    assert gone in pool.endpoints and not busy.routable
    assert all(pool.pick(Scaling(), None).replica_id != gone for _ in range(5))  # type: ignore[union-attr]
    pool.leave(busy)
    assert gone not in pool.endpoints


async def test_pool_picks_by_policy_and_avoids_a_failed_replica() -> None:
    pool = pool_with("a", "b", "c")
    first = pool.pick(Scaling(), None)
    assert first is not None
    # Least outstanding: the next two go to the other two replicas.
    assert {pool.pick(Scaling(), None).replica_id for _ in range(2)} == {"b", "c", "a"} - {first.replica_id}  # type: ignore[union-attr]
    retry = pool.pick(Scaling(routing="round-robin"), None, avoid=[first])
    assert retry is not None and retry is not first
    only = pool_with("solo")
    ep = only.pick(Scaling(), None)
    assert only.pick(Scaling(), None, avoid=[ep]) is ep  # nothing else: the same one once more
    sticky = pool_with("a", "b", "c", "d")
    homes = set()
    for _ in range(5):  # one after the other: under the load bound, the prefix always goes home
        ep = sticky.pick(Scaling(routing="prefix-affinity"), "shared prefix")
        assert ep is not None
        homes.add(ep.replica_id)
        sticky.leave(ep)
    assert len(homes) == 1


async def test_pool_does_not_route_to_starting_hung_or_retired_replicas() -> None:
    pool = pool_with("a", ready=False)
    assert pool.pick(Scaling(), None) is None
    pool = pool_with("a", "b")
    pool.endpoints["a"].mark_lost("hung")
    pool.sync(Replicas(2, (Replica("a", "http://a", True), Replica("b", "http://b", True)), 5))
    assert [ep.replica_id for ep in pool.routable()] == ["b"]  # still reported ready, not routed to
    victims = pool.retire(1)
    assert victims and pool.routable() == []
    pool.sync(Replicas(2, (Replica("a", "http://a", True), Replica("b", "http://b", True)), 6))
    assert pool.routable() == []  # the router's own scale-down is not undone by the backend's view
    pool.restore(victims)
    assert [ep.replica_id for ep in pool.routable()] == ["b"]


async def loaded(backend: ModelBackend, model: ModelEntry, **kw: object) -> ModelCoordinator:
    coord = ModelCoordinator("m", model, backend, settings(**kw), RouterMetrics())
    await coord.load()
    assert coord.state is ModelState.LOADED
    return coord


async def test_scale_up_spreads_requests_and_scale_down_takes_the_idle_replica() -> None:
    backend = MemoryBackend()
    coord = await loaded(backend, entry(maxReplicas=2))
    assert coord.replicas().desired == 1
    assert await scale_to(coord, 2, "busy")
    a, b = coord.try_acquire(), coord.try_acquire()
    assert a is not None and b is not None and a.replica_id != b.replica_id
    coord.release(b)
    assert await scale_to(coord, 1, "quiet")
    assert backend.calls[-1] == ("scale", "m", "1", b.replica_id)  # b was idle, a busy
    assert coord.last_scaling is not None and coord.last_scaling[1:] == (2, 1, "quiet")
    assert not await scale_to(coord, 1, "again")  # nothing to change
    coord.release(a)


async def test_a_scale_down_waits_for_the_requests_on_its_victim() -> None:
    backend = MemoryBackend()
    coord = await loaded(backend, entry(maxReplicas=2))
    await scale_to(coord, 2, "test")
    a, b = coord.try_acquire(), coord.try_acquire()
    assert a is not None and b is not None
    task = asyncio.ensure_future(scale_to(coord, 1, "test"))
    await asyncio.sleep(0.2)
    assert not task.done() and backend.calls[-1][:3] == ("scale", "m", "2")
    victim = next(ep for ep in (a, b) if not ep.routable)
    coord.release(victim)
    assert await task
    assert backend.calls[-1] == ("scale", "m", "1", victim.replica_id)
    coord.release(a if victim is b else b)


async def test_a_loaded_model_without_a_ready_replica_holds_requests_until_one_is_back() -> None:
    backend = MemoryBackend()
    coord = await loaded(backend, entry())
    only = coord.replicas().members[0].id
    backend.take_away("m", only)  # the pod restarts: the model stays loaded
    waiter = asyncio.ensure_future(coord.acquire())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await backend.scale("m", 1, reason="replace")
    endpoint = await asyncio.wait_for(waiter, 5)
    assert endpoint.replica_id != only
    coord.release(endpoint)


async def test_a_hung_replica_leaves_the_pool_while_the_others_serve() -> None:
    backend = MemoryBackend()
    coord = await loaded(backend, entry(maxReplicas=2))
    await scale_to(coord, 2, "test")
    coord.pool.sync(coord.replicas())
    hung, healthy = coord.pool.routable()
    await declare_hung(coord, hung, "no answer")
    assert coord.state is ModelState.LOADED and ("end_unresponsive", "m", hung.replica_id) in backend.calls
    assert hung.lost.done() and coord.pool.routable() == [healthy]
    # The last one hung: the model has failed.
    await declare_hung(coord, healthy, "no answer")
    assert coord.state is ModelState.FAILED and coord.error and coord.error.startswith("hung")


class Follower:
    """A SharedLoad of a router that does not hold the scaling lease."""

    leading = False

    def __init__(self) -> None:
        self.published: list[dict[str, float]] = []

    async def publish(self, loads: dict[str, float]) -> None:
        self.published.append(dict(loads))

    def cluster_load(self, api_id: str, own: float) -> float:
        return own + 100.0  # another router is very busy


@pytest.mark.parametrize("leading", [True, False])
async def test_only_the_leader_scales_every_router_shares_its_load(leading: bool) -> None:
    backend = MemoryBackend()
    model = entry(maxReplicas=3, targetRequests=1, window=1, scaleDownDelay=0)
    coord = await loaded(backend, model)
    shared = Follower()
    shared.leading = leading
    scaler = Scaler(lambda: [coord], shared, 1.0, enabled=True, metrics=coord.metrics)
    await scaler.tick(0.0)
    await asyncio.sleep(0.05)
    assert shared.published == [{"m": 0.0}]
    assert coord.replicas().desired == (3 if leading else 1)


async def test_the_autoscaler_switched_off_never_scales() -> None:
    backend = MemoryBackend()
    coord = await loaded(backend, entry(maxReplicas=3, targetRequests=1))
    for _ in range(5):
        coord.occupancy.enter()
    shared = Follower()
    shared.leading = True
    scaler = Scaler(lambda: [coord], shared, 1.0, enabled=False, metrics=coord.metrics)
    await scaler.tick(0.0)
    await asyncio.sleep(0.05)
    assert coord.replicas().desired == 1
    assert shared.published == []  # nor shares its load (on Kubernetes: no Leases)
