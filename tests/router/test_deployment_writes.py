"""The pure parts of the Kubernetes backend's Deployment watch: which Deployments are a model's
(kube_objects) and how the router's own writes stay over the watched object until the watch shows
them (deployment_writes)."""

from __future__ import annotations

from typing import Any

from modelplex_router.deployment_writes import Write, contains, merged, overdue, settled, with_writes
from modelplex_router.kube_objects import (
    ANNOTATION_API_ID,
    ANNOTATION_LAST_USED,
    LABEL_MANAGED_BY,
    LABEL_MULTIMODEL,
    MANAGED_BY,
    api_id_of,
    by_api_id,
    deployment_selector,
    spec_replicas,
)

SCALE_TO_2 = {"spec": {"replicas": 2}}


def _dep(name: str, api_id: str | None, *, multimodel: str = "demo", managed: bool = True,
         replicas: int = 1, version: str | None = None) -> dict[str, Any]:
    labels = {LABEL_MULTIMODEL: multimodel, **({LABEL_MANAGED_BY: MANAGED_BY} if managed else {})}
    meta: dict[str, Any] = {"name": name, "labels": labels,
                            "annotations": {ANNOTATION_API_ID: api_id} if api_id else {}}
    if version is not None:
        meta["resourceVersion"] = version
    return {"metadata": meta, "spec": {"replicas": replicas}, "status": {"readyReplicas": replicas}}


def test_the_selector_names_the_operators_labels_and_the_multimodel() -> None:
    assert deployment_selector("") == f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    assert deployment_selector("demo") == f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_MULTIMODEL}=demo"


def test_only_the_operators_deployments_of_the_served_multimodel_map_to_models() -> None:
    objects = {
        "demo-tiny": _dep("demo-tiny", "tiny"),
        "mine": _dep("mine", "other", managed=False),  # somebody else's, whatever its annotation says
        "x-other": _dep("x-other", "other", multimodel="x"),  # another MultiModel's
        "demo-bare": _dep("demo-bare", None),  # no api id: not a model's
    }
    assert by_api_id(objects, "demo") == {"tiny": "demo-tiny"}
    assert by_api_id(objects, "") == {"tiny": "demo-tiny", "other": "x-other"}
    assert api_id_of(objects["mine"], "") is None


def test_a_recreated_deployment_maps_the_model_to_its_new_name() -> None:
    before = {"demo-tiny": _dep("demo-tiny", "tiny")}
    after = {"demo-tiny-v2": _dep("demo-tiny-v2", "tiny")}
    assert by_api_id(before, "demo") == {"tiny": "demo-tiny"}
    assert by_api_id(after, "demo") == {"tiny": "demo-tiny-v2"}
    # Both there for a moment (the new one created before the old one went): one name, always the same.
    assert by_api_id({**before, **after}, "demo") == {"tiny": "demo-tiny"}


def test_contains_and_merged_follow_merge_patch_semantics() -> None:
    dep = _dep("d", "tiny", replicas=1)
    assert contains(dep, {"spec": {"replicas": 1}}) and not contains(dep, SCALE_TO_2)
    assert not contains(dep, {"metadata": {"annotations": {ANNOTATION_LAST_USED: "t"}}})
    out = merged(dep, SCALE_TO_2)
    assert spec_replicas(out) == 2 and spec_replicas(dep) == 1  # a new object; the cached one untouched
    assert out["status"] == dep["status"] and out["metadata"]["name"] == "d"


def test_a_stale_event_does_not_undo_the_routers_scale() -> None:
    write = Write(SCALE_TO_2, resource_version="120", at=100.0)
    stale = _dep("d", "tiny", replicas=1, version="119")  # a status event from before the write
    # The cache's list was sent before the write: only the events after it can show the write.
    shown, kept = with_writes(stale, [write], read_since=90.0)
    assert spec_replicas(shown) == 2 and kept == [write]
    assert shown["status"] == stale["status"]  # the rest of the object is the watch's


def test_the_overlay_goes_once_the_watch_is_at_or_after_the_write() -> None:
    write = Write(SCALE_TO_2, resource_version="120", at=100.0)
    # The watch shows the write itself.
    assert settled(write, _dep("d", "tiny", replicas=2, version="120"), read_since=90.0)
    # A later write by somebody else (kubectl scale 3): its resourceVersion is past the router's.
    later = _dep("d", "tiny", replicas=3, version="125")
    shown, kept = with_writes(later, [write], read_since=90.0)
    assert spec_replicas(shown) == 3 and kept == []


def test_without_resource_versions_the_values_or_a_later_read_settle_a_write() -> None:
    write = Write(SCALE_TO_2, resource_version=None, at=100.0)
    assert settled(write, _dep("d", "tiny", replicas=2), read_since=90.0)
    other = _dep("d", "tiny", replicas=3)  # somebody scaled to 3, or the write's event is not here yet
    assert not settled(write, other, read_since=90.0)
    assert not settled(write, other, read_since=None)
    # A list (or a GET) sent after the write was answered is the server's word: 3 it is.
    assert settled(write, other, read_since=100.5)
    # Versions that are not numbers are not compared.
    assert not settled(Write(SCALE_TO_2, "abc", 100.0), _dep("d", "tiny", version="xyz"), read_since=None)


def test_a_write_not_shown_in_time_is_overdue() -> None:
    writes = [Write(SCALE_TO_2, None, at=100.0)]
    assert not overdue(writes, now=105.0, bound=10.0)
    assert overdue(writes, now=110.0, bound=10.0)
    assert not overdue([], now=1000.0, bound=10.0)


def test_several_writes_stay_in_order_and_go_one_by_one() -> None:
    scale = Write(SCALE_TO_2, None, at=100.0)
    used = Write({"metadata": {"annotations": {ANNOTATION_LAST_USED: "2026-12-01T00:00:00.000Z"}}}, None, at=101.0)
    shown, kept = with_writes(_dep("d", "tiny", replicas=2), [scale, used], read_since=90.0)
    assert kept == [used]  # the scale is shown; the annotation not yet
    assert shown["metadata"]["annotations"][ANNOTATION_LAST_USED] == "2026-12-01T00:00:00.000Z"
    assert shown["metadata"]["annotations"][ANNOTATION_API_ID] == "tiny"
