"""The adaptive CPU thread count: it runs the faster count per step size and follows a change."""

from __future__ import annotations

from modelplex_runtime.engine.threads import MARGIN, RETRY_STEPS, AdaptiveThreads, faster


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _drive(policy: AdaptiveThreads, clock: FakeClock, tokens: int, cost: dict[int, float], steps: int) -> list[int]:
    """Run ``steps`` steps whose time per token is ``cost[threads]``; the counts it chose."""
    chosen = []
    for _ in range(steps):
        threads = policy.choose(tokens)
        seconds = cost[threads] * tokens
        clock.now += seconds
        policy.record(tokens, seconds)
        chosen.append(threads)
    return chosen


def test_it_tries_both_counts_then_runs_the_faster_and_retries_the_other_now_and_then() -> None:
    clock, applied = FakeClock(), []
    policy = AdaptiveThreads(2, applied.append, clock, retry_seconds=1.0)
    assert policy.candidates == [1, 2]
    chosen = _drive(policy, clock, 16, {1: 0.01, 2: 0.005}, 200)
    assert chosen[:2] == [2, 1]  # the old fixed rule first (16 tokens: every core), then the other
    assert chosen.count(1) <= 1 + 200 // RETRY_STEPS
    assert chosen[-1] == 2 and applied == chosen


def test_small_steps_start_on_one_core_less_and_groups_are_separate() -> None:
    clock = FakeClock()
    policy = AdaptiveThreads(2, lambda n: None, clock, retry_seconds=0.0)
    assert _drive(policy, clock, 1, {1: 0.01, 2: 0.05}, 3) == [1, 2, 1]
    assert _drive(policy, clock, 512, {1: 0.01, 2: 0.005}, 3) == [2, 1, 2]
    assert set(policy.snapshot()) == {1, 10}


def test_it_follows_the_machine_when_the_slower_count_becomes_faster() -> None:
    clock = FakeClock()
    policy = AdaptiveThreads(2, lambda n: None, clock, retry_seconds=0.5)
    _drive(policy, clock, 64, {1: 0.002, 2: 0.001}, 50)  # quiet machine: two threads win
    later = _drive(policy, clock, 64, {1: 0.002, 2: 0.01}, 200)  # busy machine: two threads got slow
    assert later[-2 * RETRY_STEPS:].count(1) >= 2 * RETRY_STEPS - 2  # one retry of the other count per RETRY_STEPS


def test_fewer_threads_win_only_by_the_margin() -> None:
    assert faster({1: 0.0010, 2: 0.0011}) == 2  # within the margin: every core
    assert faster({1: 0.0010 * (1 - MARGIN) * 0.99, 2: 0.0010}) == 1
    assert faster({1: 0.0020, 2: 0.0010}) == 2
    assert faster({3: 0.0005, 4: 0.0010}) == 3


def test_near_equal_counts_stay_on_every_core() -> None:
    clock = FakeClock()
    policy = AdaptiveThreads(2, lambda n: None, clock, retry_seconds=0.5)
    chosen = _drive(policy, clock, 32, {1: 0.00095, 2: 0.001}, 100)
    assert chosen[2:].count(2) >= 98 - 100 // RETRY_STEPS - 1


def test_one_core_has_one_candidate() -> None:
    clock = FakeClock()
    policy = AdaptiveThreads(1, lambda n: None, clock)
    assert set(_drive(policy, clock, 100, {1: 0.01}, 40)) == {1}


def test_a_requested_count_is_used_for_every_step() -> None:
    import torch

    from modelplex_runtime.engine.threads import thread_policy

    before = torch.get_num_threads()
    try:
        policy = thread_policy(1)
        assert policy.choose(1) == 1 and policy.choose(4096) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
