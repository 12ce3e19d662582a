"""The scaling lease's decisions (pure): who leads, when a term may be taken, whose load counts."""

from __future__ import annotations

from typing import Any

from modelplex_router.kube_lease import (
    ANNOTATION_LOAD,
    LABEL_GROUP,
    LABEL_KIND,
    LeaseView,
    plan,
    read_leases,
)


def lease(name: str, kind: str, holder: str, renewed: str, duration: int = 10, group: str = "demo",
          load: str | None = None) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "labels": {LABEL_GROUP: group, LABEL_KIND: kind}}
    if load is not None:
        meta["annotations"] = {ANNOTATION_LOAD: load}
    return {"metadata": meta, "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": duration}}


T0 = "2026-01-01T00:00:00.000000Z"
EPOCH = 1767225600.0  # T0


def test_read_leases_keeps_the_group_and_skips_malformed_ones() -> None:
    items = [
        lease("modelplex-scaler-demo-3", "scaler", "a", T0),
        lease("modelplex-scaler-demo-x", "scaler", "a", T0),  # no term number
        lease("modelplex-load-a", "load", "a", T0, load='{"m": 2, "n": "bad"}'),
        lease("modelplex-load-b", "load", "b", T0, load="not json"),
        lease("modelplex-load-c", "load", "c", T0, group="other", load='{"m": 9}'),
        {"metadata": {"name": "unlabelled"}},
    ]
    views = read_leases(items, "demo")
    assert [(v.name, v.kind, v.term) for v in views] == [
        ("modelplex-scaler-demo-3", "scaler", 3), ("modelplex-load-a", "load", 0), ("modelplex-load-b", "load", 0)]
    assert views[0].expires == EPOCH + 10
    assert views[1].load == {"m": 2.0} and views[2].load == {}


def scaler(term: int, holder: str, expires: float) -> LeaseView:
    return LeaseView(f"modelplex-scaler-demo-{term}", "scaler", holder, expires, term=term)


def load(holder: str, expires: float, **loads: float) -> LeaseView:
    return LeaseView(f"modelplex-load-{holder}", "load", holder, expires, load=loads)


def test_no_term_yet_take_the_first() -> None:
    assert plan([], "a", 100.0).action == "take" and plan([], "a", 100.0).term == 1


def test_the_holder_renews_the_others_follow_while_it_is_fresh() -> None:
    leases = [scaler(1, "a", 95.0), scaler(2, "a", 110.0)]
    mine = plan(leases, "a", 100.0)
    assert (mine.action, mine.term, mine.stale_terms) == ("renew", 2, ("modelplex-scaler-demo-1",))
    theirs = plan(leases, "b", 100.0)
    assert (theirs.action, theirs.term) == ("follow", 2)


def test_an_expired_term_is_taken_as_the_next_one_even_by_its_old_holder() -> None:
    leases = [scaler(4, "a", 99.0)]
    for me in ("a", "b"):
        taken = plan(leases, me, 100.0)
        # Never a renewal of the expired term: another router may be creating term 5 right now, and
        # creating an existing object fails, so only one of them gets it.
        assert (taken.action, taken.term, taken.stale_terms) == ("take", 5, ("modelplex-scaler-demo-4",))


def test_only_fresh_loads_of_the_other_routers_count() -> None:
    leases = [load("a", 110.0, m=3), load("b", 110.0, m=2, n=1), load("c", 99.0, m=50)]
    assert plan(leases, "a", 100.0).others == {"m": 2.0, "n": 1.0}
    assert plan(leases, "z", 100.0).others == {"m": 5.0, "n": 1.0}
