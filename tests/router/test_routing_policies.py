"""The routing policies (modelplex_router.routing), pure: least outstanding, round robin, and prefix
affinity by consistent hashing with bounded load."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest

from modelplex_router.routing import (
    Candidate,
    HashRing,
    affinity_text,
    bounded_capacity,
    choose,
    request_affinity,
    stable_hash,
)
from modelplex_spec import Scaling

IDS = ["pod-a", "pod-b", "pod-c", "pod-d"]


def cands(loads: dict[str, int]) -> list[Candidate]:
    return [Candidate(rid, n) for rid, n in loads.items()]


def test_least_outstanding_takes_the_idlest_and_rotates_among_ties() -> None:
    assert choose("least-outstanding", cands({"a": 3, "b": 1, "c": 2}), turn=0).id == "b"
    tied = cands({"a": 1, "b": 1, "c": 5})
    assert {choose("least-outstanding", tied, turn=t).id for t in range(4)} == {"a", "b"}


def test_round_robin_cycles_whatever_the_load() -> None:
    replicas = cands({"a": 9, "b": 0, "c": 0})
    assert [choose("round-robin", replicas, turn=t).id for t in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_one_candidate_and_none() -> None:
    assert choose("prefix-affinity", cands({"a": 50}), turn=3, key=1).id == "a"
    with pytest.raises(ValueError, match="no replica"):
        choose("least-outstanding", [], turn=0)


def test_bounded_capacity_always_leaves_room_somewhere() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 8)
        loads = [rng.randint(0, 20) for _ in range(n)]
        for bound in (1.0, 1.25, 2.0):
            assert min(loads) + 1 <= bounded_capacity(sum(loads), n, bound)


def test_prefix_affinity_never_puts_a_replica_above_the_bound() -> None:
    # Random arrivals (a few hot prefixes and many cold ones) and departures; after every placement the
    # chosen replica holds at most ceil(c * (total + 1) / n).
    rng = random.Random(11)
    ring = HashRing(IDS)
    outstanding = dict.fromkeys(IDS, 0)
    running: list[str] = []
    for bound in (1.0, 1.25, 1.5):
        for _ in range(3000):
            if running and rng.random() < 0.45:
                outstanding[running.pop(rng.randrange(len(running)))] -= 1
                continue
            key = f"hot-{rng.randint(0, 2)}" if rng.random() < 0.8 else f"cold-{rng.randint(0, 1000)}"
            total = sum(outstanding.values())
            chosen = choose("prefix-affinity", cands(outstanding), turn=0, ring=ring, key=stable_hash(key),
                            load_bound=bound)
            outstanding[chosen.id] += 1
            running.append(chosen.id)
            assert outstanding[chosen.id] <= math.ceil(bound * (total + 1) / len(IDS)), (bound, outstanding)


def test_same_prefix_same_replica_while_under_the_bound_then_overflow_then_home_again() -> None:
    ring = HashRing(IDS)
    key = stable_hash("a long shared system prompt")
    home = next(ring.walk(key))
    outstanding = dict.fromkeys(IDS, 0)
    # Lightly loaded: every request with the prefix goes home.
    for _ in range(20):
        outstanding = dict.fromkeys(IDS, 1)
        assert choose("prefix-affinity", cands(outstanding), turn=0, ring=ring, key=key).id == home
    # Home at the bound: the next replica on the ring takes the overflow.
    outstanding = {rid: (5 if rid == home else 0) for rid in IDS}
    overflow = choose("prefix-affinity", cands(outstanding), turn=0, ring=ring, key=key, load_bound=1.25).id
    assert overflow != home and overflow == list(ring.walk(key))[1]
    # Load gone: home again.
    outstanding = dict.fromkeys(IDS, 0)
    assert choose("prefix-affinity", cands(outstanding), turn=0, ring=ring, key=key).id == home


def test_different_prefixes_spread_over_the_replicas() -> None:
    ring = HashRing(IDS)
    homes = [next(ring.walk(stable_hash(f"prompt {i}"))) for i in range(400)]
    counts = {rid: homes.count(rid) for rid in IDS}
    assert all(40 <= n <= 160 for n in counts.values()), counts


def test_removing_a_replica_moves_only_its_own_prefixes() -> None:
    before, after = HashRing(IDS), HashRing([rid for rid in IDS if rid != "pod-c"])
    for i in range(300):
        key = stable_hash(f"p{i}")
        old, new = next(before.walk(key)), next(after.walk(key))
        assert old == "pod-c" or old == new


def test_the_ring_is_the_same_in_every_process() -> None:
    # Every router replica must send a prefix to the same pod: the hash may not depend on PYTHONHASHSEED.
    code = (
        "import json; from modelplex_router.routing import HashRing, stable_hash; "
        f"r = HashRing({IDS!r}); print(json.dumps([next(r.walk(stable_hash(f'p{{i}}'))) for i in range(50)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    ring = HashRing(IDS)
    assert json.loads(out) == [next(ring.walk(stable_hash(f"p{i}"))) for i in range(50)]


def test_a_request_without_a_key_is_routed_by_least_outstanding() -> None:
    ring = HashRing(["a", "b"])
    assert choose("prefix-affinity", cands({"a": 4, "b": 0}), turn=0, ring=ring, key=None).id == "b"


SYSTEM = "You are a careful assistant. " * 40  # > 512 characters


def test_affinity_text_is_the_rendered_prompt_prefix() -> None:
    a = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "question one"}]}
    b = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "question two"}]}
    assert affinity_text(a, 512) == affinity_text(b, 512)
    assert len(affinity_text(a, 512) or "") == 512
    short = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}]}
    other = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "two"}]}
    assert affinity_text(short, 512) != affinity_text(other, 512)
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}]}
    assert affinity_text(parts, 512) == "<user>hi"
    assert affinity_text({"prompt": ["first", "second"]}, 3) == "fir"
    assert affinity_text({"prompt": [1, 2, 3]}, 512) == "1"
    assert affinity_text({"input": "embed me"}, 512) == "embed me"
    assert affinity_text({"model": "m"}, 512) is None


def test_request_affinity_only_for_prefix_affinity_models() -> None:
    body = {"messages": [{"role": "user", "content": "hello"}]}
    assert request_affinity(Scaling(), body) is None
    assert request_affinity(Scaling(routing="prefix-affinity", prefix_length=4), body) == "<use"
