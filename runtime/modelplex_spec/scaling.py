"""How many replicas of a model run and how requests are spread over them: the entry's ``scaling`` block.

Engine- and backend-neutral: the local backend runs that many runtime processes of the model, the
Kubernetes backend scales the model's Deployment. Every field is optional; ``resolve_scaling`` fills in
the defaults and the older ``kubernetes.minReplicas`` / ``kubernetes.maxReplicas`` (still accepted: they
mean the same as the fields of this block, and giving a field in both places with different values is
a contradiction the validation refuses).

    replicas while loaded:   max(minReplicas, 1) .. maxReplicas, chosen by the autoscaler from the load
    replicas when unloaded:  minReplicas (0 = scale to zero, by idle or explicit unload as before)

The autoscaler's load is requests in flight plus requests waiting, per replica, averaged over
``window`` seconds, against ``targetRequests``; it scales up at once and down only when every
recommendation of the last ``scaleDownDelay`` seconds was lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RoutingPolicy = Literal["least-outstanding", "prefix-affinity", "round-robin"]
"""How the router picks one replica per request: the fewest requests outstanding (from this router), a
consistent hash of the prompt's prefix with bounded load (requests sharing a long prefix land where
the engine's prefix cache holds it), or plain rotation (a baseline)."""

DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 1
DEFAULT_TARGET_REQUESTS = 8.0
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_SCALE_DOWN_DELAY_SECONDS = 120.0
DEFAULT_ROUTING: RoutingPolicy = "least-outstanding"
DEFAULT_PREFIX_LENGTH = 512
DEFAULT_LOAD_BOUND = 1.25


class ScalingSettings(BaseModel):
    """The ``scaling`` block as written (None = not given: the default, or the ``kubernetes`` field)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    minReplicas: int | None = Field(
        default=None,
        ge=0,
        description=f"Replicas kept when the model is unloaded, and the autoscaler's floor (at least 1 while "
        f"loaded); default {DEFAULT_MIN_REPLICAS} (scale to zero). Same as kubernetes.minReplicas.",
    )
    maxReplicas: int | None = Field(
        default=None,
        ge=1,
        description=f"The most replicas the autoscaler runs; default {DEFAULT_MAX_REPLICAS}. Same as "
        "kubernetes.maxReplicas.",
    )
    targetRequests: float | None = Field(
        default=None,
        gt=0,
        description=f"Requests in flight plus waiting per replica the autoscaler aims at; default "
        f"{DEFAULT_TARGET_REQUESTS:g}.",
    )
    window: float | None = Field(
        default=None,
        gt=0,
        description=f"Seconds the load is averaged over; default {DEFAULT_WINDOW_SECONDS:g}.",
    )
    scaleDownDelay: float | None = Field(
        default=None,
        ge=0,
        description=f"Seconds the load must have called for fewer replicas before the autoscaler removes "
        f"any; default {DEFAULT_SCALE_DOWN_DELAY_SECONDS:g}.",
    )
    routing: RoutingPolicy | None = Field(
        default=None,
        description="How requests are spread over the replicas: least-outstanding (default), prefix-affinity "
        "or round-robin.",
    )
    prefixLength: int | None = Field(
        default=None,
        gt=0,
        description=f"prefix-affinity: characters of the rendered prompt (messages) hashed to pick the "
        f"replica; default {DEFAULT_PREFIX_LENGTH}.",
    )
    loadBound: float | None = Field(
        default=None,
        ge=1.0,
        description=f"prefix-affinity: no replica takes more than this times the mean outstanding requests "
        f"(plus one) before its prefix moves to the next replica on the ring; default {DEFAULT_LOAD_BOUND:g}.",
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> ScalingSettings:
        if self.minReplicas is not None and self.maxReplicas is not None and self.minReplicas > self.maxReplicas:
            raise ValueError(f"minReplicas ({self.minReplicas}) exceeds maxReplicas ({self.maxReplicas})")
        return self


@dataclass(frozen=True, slots=True)
class Scaling:
    """The resolved scaling of one model (every default filled in)."""

    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    target_requests: float = DEFAULT_TARGET_REQUESTS
    window: float = DEFAULT_WINDOW_SECONDS
    scale_down_delay: float = DEFAULT_SCALE_DOWN_DELAY_SECONDS
    routing: RoutingPolicy = DEFAULT_ROUTING
    prefix_length: int = DEFAULT_PREFIX_LENGTH
    load_bound: float = DEFAULT_LOAD_BOUND

    @property
    def floor(self) -> int:
        """The fewest replicas while the model is loaded (what a load starts)."""
        return max(self.min_replicas, 1)

    @property
    def autoscaled(self) -> bool:
        """The load can change the replica count (the range while loaded has more than one value)."""
        return self.max_replicas > self.floor

    def bounded(self, replicas: int) -> int:
        """``replicas`` inside [floor, max_replicas]."""
        return min(max(replicas, self.floor), self.max_replicas)


def _replica_sources(
    scaling: ScalingSettings | None, kube_min: int | None, kube_max: int | None
) -> tuple[tuple[int | None, int | None], list[str]]:
    """(min, max) as given in either place, and the contradictions between the two places."""
    problems: list[str] = []
    given: list[int | None] = []
    for name, kube_value in (("minReplicas", kube_min), ("maxReplicas", kube_max)):
        own = getattr(scaling, name) if scaling is not None else None
        if own is not None and kube_value is not None and own != kube_value:
            problems.append(
                f"scaling.{name} ({own}) contradicts kubernetes.{name} ({kube_value}); give it in one place"
            )
        given.append(own if own is not None else kube_value)
    return (given[0], given[1]), problems


def scaling_problems(scaling: ScalingSettings | None, kube_min: int | None, kube_max: int | None) -> list[str]:
    """Why the two places' replica settings cannot be combined (empty when they can)."""
    (low, high), problems = _replica_sources(scaling, kube_min, kube_max)
    if problems:
        return problems
    floor = DEFAULT_MIN_REPLICAS if low is None else low
    ceiling = DEFAULT_MAX_REPLICAS if high is None else high
    if floor > ceiling:
        unset = "" if high is not None else f" (maxReplicas defaults to {DEFAULT_MAX_REPLICAS})"
        problems.append(f"minReplicas ({floor}) exceeds maxReplicas ({ceiling}){unset}")
    return problems


def resolve_scaling(scaling: ScalingSettings | None, kube_min: int | None, kube_max: int | None) -> Scaling:
    """Defaults filled in; the ``kubernetes`` fields stand in for unset replica fields of the block."""
    (low, high), _ = _replica_sources(scaling, kube_min, kube_max)
    s = scaling or ScalingSettings()
    # Fields validated > 0 (or >= 1) can take `or`; a delay of 0 is a value.
    return Scaling(
        min_replicas=DEFAULT_MIN_REPLICAS if low is None else low,
        max_replicas=DEFAULT_MAX_REPLICAS if high is None else high,
        target_requests=s.targetRequests or DEFAULT_TARGET_REQUESTS,
        window=s.window or DEFAULT_WINDOW_SECONDS,
        scale_down_delay=DEFAULT_SCALE_DOWN_DELAY_SECONDS if s.scaleDownDelay is None else s.scaleDownDelay,
        routing=s.routing or DEFAULT_ROUTING,
        prefix_length=s.prefixLength or DEFAULT_PREFIX_LENGTH,
        load_bound=s.loadBound or DEFAULT_LOAD_BOUND,
    )
