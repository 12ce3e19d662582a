"""Unit tests for the decisions behind fault handling: load back-off, the health verdict, and aborting
the requests of a runtime declared lost (modelplex_router.backoff, .health, .endpoint)."""

from __future__ import annotations

import asyncio

import pytest

from modelplex_router.backoff import BackoffPolicy, LoadBackoff
from modelplex_router.endpoint import Endpoint
from modelplex_router.errors import RuntimeUnresponsive
from modelplex_router.health import HealthTracker


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = BackoffPolicy(initial=2, maximum=300)
    assert [policy.delay(n) for n in range(0, 11)] == [0, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert policy.delay(10_000) == 300  # no overflow however long the streak
    assert BackoffPolicy(initial=0, maximum=300).delay(5) == 0  # back-off turned off


def test_backoff_streak_and_retry_after() -> None:
    backoff = LoadBackoff(BackoffPolicy(initial=2, maximum=10))
    assert backoff.remaining(100.0) == 0
    assert backoff.failed(100.0) == 2
    assert backoff.remaining(101.5) == 0.5 and backoff.retry_after(101.5) == 1
    assert backoff.failed(103.0) == 4 and backoff.retry_after(103.0) == 4
    assert backoff.failed(108.0) == 8 and backoff.failed(117.0) == 10
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.remaining(117.0) == 0


def test_hung_after_enough_failures_in_a_row_without_activity() -> None:
    health = HealthTracker(threshold=3)
    assert not health.record("timeout", now=1)
    assert not health.record("timeout", now=2)
    # A byte from the runtime since the last check: alive, the streak starts over.
    assert not health.record("timeout", now=3, active_since_last=True)
    assert health.failures == 0
    assert not health.record("timeout", now=4)
    assert not health.record(None, now=5)  # one good answer resets it too
    assert not health.record("timeout", now=6)
    assert not health.record("timeout", now=7)
    assert health.record("timeout", now=8)
    assert health.last_problem == "timeout"


def test_checks_are_due_by_interval_or_on_request() -> None:
    health = HealthTracker(threshold=3, checked_at=10)
    assert not health.due(now=12, interval=5) and health.due(now=15, interval=5)
    health.check_soon()
    assert health.due(now=11, interval=5)
    health.record(None, now=11)
    assert not health.due(now=12, interval=5)
    assert not health.due(now=100, interval=0)  # health checks off


async def test_a_lost_endpoint_aborts_what_waits_on_it() -> None:
    endpoint = Endpoint("m", "http://127.0.0.1:9", health_threshold=3, retry_after=7)
    never = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(endpoint.abortable(never))
    await asyncio.sleep(0)
    assert await endpoint.abortable(asyncio.sleep(0, "done")) == "done"
    endpoint.mark_lost("the runtime stopped answering")
    with pytest.raises(RuntimeUnresponsive) as err:
        await waiter
    assert err.value.headers == {"Retry-After": "7"} and "stopped answering" in err.value.message
    # Anything awaited on it afterwards fails at once.
    with pytest.raises(RuntimeUnresponsive):
        await endpoint.abortable(asyncio.sleep(10))


async def test_aborting_one_endpoint_leaves_other_waits_and_cancellation_alone() -> None:
    lost, kept = (Endpoint(n, "http://127.0.0.1:9", 3, 1) for n in ("a", "b"))
    waiting = asyncio.create_task(kept.abortable(asyncio.sleep(0.2, "fine")))
    cancelled = asyncio.create_task(lost.abortable(asyncio.sleep(10)))
    await asyncio.sleep(0)
    cancelled.cancel()  # a client that left: a plain cancellation, not a lost runtime
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    lost.mark_lost("gone")
    assert await waiting == "fine"


async def test_a_wait_on_a_runtime_is_bounded_by_the_stall_timeout() -> None:
    endpoint = Endpoint("m", "http://127.0.0.1:9", health_threshold=3, retry_after=1)
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await endpoint.abortable(never, stall_seconds=0.05)
    assert not endpoint.lost.done()  # a stall ends the request, not the runtime
    assert await endpoint.abortable(asyncio.sleep(0, "quick"), stall_seconds=5) == "quick"
