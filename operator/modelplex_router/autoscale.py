"""How many replicas a model's load calls for: the autoscaler's decisions, as pure functions.

Every tick the scaler (``scaler.py``) adds one sample of the model's load (requests in flight plus
waiting, over every router) to its ``LoadHistory``, and ``decide`` turns the history into a count:

* the *recommendation* is ``ceil(average load over the window / targetRequests)``, kept within
  ``[max(minReplicas, 1), maxReplicas]`` (scaling to zero stays the idle or explicit unload);
* a recommendation above the current count scales up at once;
* the count goes down only when every recommendation of the last ``scaleDownDelay`` seconds was below
  it, and then to the highest of them (a short lull, or one noisy sample, never removes a replica);
* a count outside the bounds (the entry changed) is brought inside them at once.

The clock is passed in; nothing here sleeps or reads the time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from modelplex_spec import Scaling

# A recommendation just above a whole number (8.0000001 requests for a target of 8) is float noise.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    reason: str


class LoadHistory:
    """One model's load samples and recommendations (monotonic seconds), trimmed to what is needed."""

    def __init__(self) -> None:
        self.loads: deque[tuple[float, float]] = deque()
        self.recommendations: deque[tuple[float, int]] = deque()
        self.since: float | None = None
        """When the samples began (the model loaded, or the history was cleared)."""

    def add(self, now: float, load: float, scaling: Scaling) -> float:
        """Record a sample and the recommendation it makes; returns the average load over the window
        ending now. Every router records every tick, leading or not, so a new leader decides on the same
        history as the old one."""
        if self.since is None:
            self.since = now
        self.loads.append((now, load))
        while self.loads and self.loads[0][0] < now - scaling.window:
            self.loads.popleft()
        average = sum(value for _, value in self.loads) / len(self.loads)
        self.recommendations.append((now, recommend(average, scaling)))
        while self.recommendations and self.recommendations[0][0] < now - scaling.scale_down_delay:
            self.recommendations.popleft()
        return average

    def clear(self) -> None:
        self.loads.clear()
        self.recommendations.clear()
        self.since = None


def recommend(average_load: float, scaling: Scaling) -> int:
    """The replicas ``average_load`` calls for at ``targetRequests`` each, within the bounds."""
    return scaling.bounded(math.ceil(average_load / scaling.target_requests - _EPSILON))


def decide(current: int, average_load: float, history: LoadHistory, now: float, scaling: Scaling) -> Decision:
    """The replica count for a loaded model at ``current`` replicas now, from its history (whose last
    sample gave ``average_load``; see the module docstring)."""
    wanted = recommend(average_load, scaling)
    target = scaling.target_requests
    if current != scaling.bounded(current):
        return Decision(
            scaling.bounded(current), f"{current} replicas is outside [{scaling.floor}, {scaling.max_replicas}]"
        )
    if wanted > current:
        return Decision(
            wanted,
            f"load {average_load:.1f} (requests in flight + waiting, {scaling.window:g}s average) is "
            f"{average_load / current:.1f} per replica, above the target {target:g}",
        )
    covered = history.since is not None and now - history.since >= scaling.scale_down_delay
    highest = max((r for _, r in history.recommendations), default=wanted)
    if covered and highest < current:
        return Decision(
            highest,
            f"load called for at most {highest} replicas for {scaling.scale_down_delay:g}s "
            f"(now {average_load:.1f}, target {target:g} per replica)",
        )
    return Decision(current, "load within target")
