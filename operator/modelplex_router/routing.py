"""Which replica of a model takes a request: the routing policies, as pure functions.

The coordinator's replica pool (``replica_pool.py``) calls ``choose`` once per request with the
replicas that may take it and how many requests this router has outstanding on each; nothing here
does I/O or keeps state beyond what the caller passes in.

* ``least-outstanding`` (default): the replica with the fewest requests outstanding; ties rotate.
* ``round-robin``: the replicas in turn (a baseline for the benchmark).
* ``prefix-affinity``: consistent hashing with bounded load (Mirrokni, Thorup, Zadimoghaddam, 2018).
  The request's key (a prefix of its rendered prompt, ``affinity_text``) is hashed onto a ring on
  which every replica has ``VIRTUAL_NODES`` points; walking clockwise from the key, the first replica
  that would stay within ``ceil(load_bound * (outstanding + 1) / replicas)`` takes it. So requests that
  share a long prefix land on the replica whose engine already caches it, until that replica is
  busier than the bound; then the next one on the ring takes the overflow. Hashes are stable across
  processes (blake2b, not Python's salted ``hash``), so every router replica sends a prefix to the
  same pod.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelplex_spec import RoutingPolicy, Scaling

VIRTUAL_NODES = 64
"""Ring points per replica: enough that keys spread evenly over a handful of replicas."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A replica that may take the request, with the requests this router has outstanding on it."""

    id: str
    outstanding: int


def stable_hash(text: str) -> int:
    """A 64-bit hash that every process computes the same."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class HashRing:
    """Replica ids on a 64-bit ring, ``VIRTUAL_NODES`` points each."""

    def __init__(self, ids: Iterable[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        points = sorted((stable_hash(f"{rid}#{i}"), rid) for rid in set(ids) for i in range(virtual_nodes))
        self._hashes = [h for h, _ in points]
        self._ids = [rid for _, rid in points]

    def walk(self, key: int) -> Iterator[str]:
        """Every replica once, clockwise from ``key``."""
        if not self._ids:
            return
        start = bisect.bisect_left(self._hashes, key)
        seen: set[str] = set()
        for i in range(len(self._ids)):
            rid = self._ids[(start + i) % len(self._ids)]
            if rid not in seen:
                seen.add(rid)
                yield rid


def bounded_capacity(total_outstanding: int, replicas: int, load_bound: float) -> int:
    """The most requests one replica may hold with the new one placed: ``ceil(c * (total + 1) / n)``.

    With ``c >= 1`` some replica always fits (the least loaded holds at most ``floor(total / n)``)."""
    return math.ceil(load_bound * (total_outstanding + 1) / replicas)


def least_outstanding(candidates: Sequence[Candidate], turn: int) -> Candidate:
    low = min(c.outstanding for c in candidates)
    tied = [c for c in candidates if c.outstanding == low]
    return tied[turn % len(tied)]


def round_robin(candidates: Sequence[Candidate], turn: int) -> Candidate:
    return candidates[turn % len(candidates)]


def prefix_affinity(candidates: Sequence[Candidate], ring: HashRing, key: int, load_bound: float) -> Candidate:
    by_id = {c.id: c for c in candidates}
    capacity = bounded_capacity(sum(c.outstanding for c in candidates), len(candidates), load_bound)
    for rid in ring.walk(key):
        candidate = by_id.get(rid)
        if candidate is not None and candidate.outstanding + 1 <= capacity:
            return candidate
    # Only when the ring lacks some candidates (it is built from every routable replica, so it does not).
    return least_outstanding(candidates, 0)


def choose(
    policy: RoutingPolicy,
    candidates: Sequence[Candidate],
    *,
    turn: int,
    ring: HashRing | None = None,
    key: int | None = None,
    load_bound: float = 1.25,
) -> Candidate:
    """The replica for one request. ``turn`` counts the model's requests (rotation and tie-breaks);
    prefix affinity needs the ``ring`` and the request's ``key`` and falls back to least outstanding
    for a request without one (nothing to hash)."""
    if not candidates:
        raise ValueError("no replica to choose from")
    if len(candidates) == 1:
        return candidates[0]
    if policy == "prefix-affinity" and ring is not None and key is not None:
        return prefix_affinity(candidates, ring, key, load_bound)
    if policy == "round-robin":
        return round_robin(candidates, turn)
    return least_outstanding(candidates, turn)


def request_affinity(scaling: Scaling, payload: Mapping[str, Any]) -> str | None:
    """What prefix affinity hashes for this request; None when the model routes by another policy."""
    if scaling.routing != "prefix-affinity":
        return None
    return affinity_text(payload, scaling.prefix_length)


def affinity_text(payload: Mapping[str, Any], length: int) -> str | None:
    """The first ``length`` characters of the request's prompt as a replica's engine would see it in its
    prefix cache: chat messages in order (role and text of each), or a completion's prompt, or the
    input of an embedding; None when the body has none."""
    parts: list[str] = []
    size = 0
    for piece in _prompt_pieces(payload):
        parts.append(piece)
        size += len(piece)
        if size >= length:
            break
    text = "".join(parts)[:length]
    return text or None


def _prompt_pieces(payload: Mapping[str, Any]) -> Iterator[str]:
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            yield f"<{message.get('role', '')}>"
            yield from _content_text(message.get("content"))
        return
    for field in ("prompt", "input"):
        value = payload.get(field)
        if isinstance(value, list) and value:
            value = value[0]  # the first prompt of a batch (or the token ids of one)
        if value is not None:
            yield value if isinstance(value, str) else str(value)
            return


def _content_text(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]
