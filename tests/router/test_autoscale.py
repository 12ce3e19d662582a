"""The autoscaler's decisions (modelplex_router.autoscale), pure: window, target, delay, bounds."""

from __future__ import annotations

from modelplex_router.autoscale import Decision, LoadHistory, decide, recommend
from modelplex_spec import Scaling

S = Scaling(min_replicas=0, max_replicas=4, target_requests=8, window=10, scale_down_delay=30)


def run(loads: list[float], current: int, scaling: Scaling = S, start: float = 0.0) -> list[Decision]:
    """One decision per second for the given load samples, applying each decision."""
    history = LoadHistory()
    decisions = []
    for i, load in enumerate(loads):
        now = start + i
        average = history.add(now, load, scaling)
        decision = decide(current, average, history, now, scaling)
        decisions.append(decision)
        current = decision.desired
    return decisions


def test_recommendation_is_the_load_over_the_target_within_the_bounds() -> None:
    assert recommend(0, S) == 1  # never zero: scaling to zero is the idle unload's
    assert recommend(8, S) == 1
    assert recommend(3 * (8 / 3), S) == 1  # float noise (8.000000000000002) is not a replica
    assert recommend(8.5, S) == 2
    assert recommend(24, S) == 3
    assert recommend(1000, S) == 4
    assert recommend(0, Scaling(min_replicas=2, max_replicas=4)) == 2


def test_sustained_load_scales_up_at_once_a_spike_does_not() -> None:
    # One second of 20 requests in a 10 s window averages 2: no replica for it.
    assert [d.desired for d in run([0] * 9 + [20], current=1)] == [1] * 10
    # Sustained 20 requests: the average passes the target within a few samples and scales up.
    decisions = run([20] * 10, current=1)
    assert decisions[0].desired == 3  # the first sample is the whole history
    assert decisions[-1].desired == 3 and "above the target 8" in decisions[0].reason


def test_window_averages_the_load() -> None:
    # 8 s of 0 then 2 s of 40 in a 10 s window: average 8, still one replica; one more second tips it.
    decisions = run([0] * 8 + [40, 40, 40], current=1)
    assert [d.desired for d in decisions[:10]] == [1] * 10
    assert decisions[10].desired == 2


def test_scale_down_waits_for_the_delay_then_goes_to_the_highest_recent_need() -> None:
    loads = [30.0] * 10 + [10.0] * 60  # 4 replicas, then load for 2
    decisions = run(loads, current=1)
    desired = [d.desired for d in decisions]
    assert desired[9] == 4
    first_down = next(i for i, d in enumerate(desired) if i > 9 and d < 4)
    # The last recommendation of 4 came while the window still held the high samples: the count holds
    # for the whole delay after it, then steps down to what the last delay's busiest second needed.
    last_four = max(i for i in range(len(loads)) if recommend(_average(loads, i, 10), S) == 4)
    assert first_down - last_four >= S.scale_down_delay
    assert all(d == 4 for d in desired[9:first_down])
    assert desired[-1] == 2
    to_two = desired.index(2)
    assert "at most 2 replicas for 30s" in decisions[to_two].reason
    assert all(desired[i] >= desired[i + 1] for i in range(9, len(desired) - 1))


def _average(loads: list[float], i: int, window: int) -> float:
    recent = loads[max(0, i - window) : i + 1]
    return sum(recent) / len(recent)


def test_a_burst_within_the_delay_keeps_the_replicas_it_needed() -> None:
    quiet = [d.desired for d in run([30.0] * 10 + [0.0] * 50, current=1)]
    burst = [d.desired for d in run([30.0] * 10 + [0.0] * 20 + [30.0] * 3 + [0.0] * 27, current=1)]
    assert quiet[-1] == 1
    # Three busy seconds at t=30 keep a second replica wanted until t=40: 30 s later it is still there.
    assert burst[-1] == 2


def test_no_scale_down_before_the_history_covers_the_delay() -> None:
    # A router that has watched a model for 5 s (just loaded, or just became leader) keeps its count.
    history = LoadHistory()
    for t in range(5):
        average = history.add(float(t), 0.0, S)
    assert decide(3, average, history, 4.0, S).desired == 3


def test_counts_outside_the_bounds_are_brought_inside() -> None:
    history = LoadHistory()
    average = history.add(0.0, 0.0, S)
    assert decide(6, average, history, 0.0, S) == Decision(4, "6 replicas is outside [1, 4]")
    fixed = Scaling(min_replicas=2, max_replicas=2)
    average = history.add(1.0, 100.0, fixed)
    assert decide(1, average, history, 1.0, fixed).desired == 2
    assert decide(2, average, history, 1.0, fixed).desired == 2  # a fixed count: nothing to decide


def test_zero_delay_scales_down_on_the_next_lower_recommendation() -> None:
    quick = Scaling(max_replicas=3, target_requests=1, window=1, scale_down_delay=0)
    desired = [d.desired for d in run([3, 3, 0, 0], current=1, scaling=quick)]
    assert desired == [3, 3, 2, 1]  # the 1 s window still holds one busy second at t=2
