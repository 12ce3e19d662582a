"""EndpointSlices -> a model's pods (pure): which pods take requests, at which address and port."""

from __future__ import annotations

from typing import Any

from modelplex_router.endpoint_slices import (
    PodEndpoint,
    endpoint_changes,
    pod_endpoints,
    ready_endpoints,
    service_of,
)


def _slice(endpoints: list[dict[str, Any]], ports: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo-tiny-abcde", "labels": {"kubernetes.io/service-name": "demo-tiny"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}] if ports is None else ports,
        "endpoints": endpoints,
        **extra,
    }


def _ep(pod: str, address: str, **conditions: Any) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions, "targetRef": {"kind": "Pod", "name": pod}}


def test_ready_pods_are_those_ready_and_not_terminating() -> None:
    slices = [_slice([
        _ep("p-ready", "10.0.0.1", ready=True, serving=True, terminating=False),
        _ep("p-unset", "10.0.0.2"),  # conditions unset: ready (the API's reading of nil)
        _ep("p-starting", "10.0.0.3", ready=False),
        _ep("p-terminating", "10.0.0.4", ready=True, terminating=True),  # never new requests
        _ep("p-draining", "10.0.0.5", ready=False, serving=True, terminating=True),
    ])]  # fmt: skip
    assert [(e.pod, e.url) for e in ready_endpoints(slices, "http", 8000)] == [
        ("p-ready", "http://10.0.0.1:8000"),
        ("p-unset", "http://10.0.0.2:8000"),
    ]
    assert [e.pod for e in pod_endpoints(slices, "http", 8000) if not e.ready] == [
        "p-draining", "p-starting", "p-terminating"]  # fmt: skip


def test_the_runtime_port_is_found_by_name_then_by_number() -> None:
    by_name = _slice([_ep("a", "10.0.0.1")], ports=[{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}])
    by_number = _slice([_ep("b", "10.0.0.2")], ports=[{"port": 8000}])
    without = _slice([_ep("c", "10.0.0.3")], ports=[{"name": "metrics", "port": 9090}])
    assert [(e.pod, e.port) for e in ready_endpoints([by_name, by_number, without], "http", 8000)] == [
        ("a", 8080), ("b", 8000)]  # fmt: skip


def test_endpoints_without_a_pod_or_an_address_and_fqdn_slices_are_skipped() -> None:
    slices = [
        _slice([
            {"addresses": ["10.0.0.9"], "conditions": {"ready": True}},  # no targetRef
            {"addresses": [], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "x"}},
            {"addresses": ["10.0.0.8"], "targetRef": {"kind": "Node", "name": "node-1"}},
            _ep("ok", "10.0.0.7", ready=True),
        ]),
        _slice([_ep("fqdn", "example.com", ready=True)], addressType="FQDN"),
    ]  # fmt: skip
    assert [e.pod for e in ready_endpoints(slices, "http", 8000)] == ["ok"]


def test_a_pod_listed_in_two_slices_counts_once_and_ready_wins() -> None:
    # While the controller moves an endpoint between slices it can be in both for a moment.
    first = _slice([_ep("p", "10.0.0.1", ready=False)])
    second = _slice([_ep("p", "10.0.0.1", ready=True), _ep("q", "fd00::2", ready=True)])
    assert ready_endpoints([second, first], "http", 8000) == ready_endpoints([first, second], "http", 8000) == [
        PodEndpoint("p", "10.0.0.1", 8000, True), PodEndpoint("q", "fd00::2", 8000, True)]  # fmt: skip
    assert PodEndpoint("q", "fd00::2", 8000, True).url == "http://[fd00::2]:8000"


def test_slices_name_their_service() -> None:
    assert service_of(_slice([])) == "demo-tiny"
    assert service_of({"metadata": {"name": "x", "labels": {}}}) is None
    assert service_of({"metadata": {"name": "x"}}) is None


def test_changes_name_the_pods_that_joined_and_left_the_ready_set() -> None:
    a, b, c = (PodEndpoint(p, f"10.0.0.{i}", 8000, True) for i, p in enumerate("abc"))
    b_down = PodEndpoint("b", b.address, 8000, False)
    a_moved = PodEndpoint("a", "10.0.1.1", 8000, True)  # same pod name, new address: a new replica
    assert endpoint_changes([a, b], [a, b_down, c]) == ([c], [b])
    assert endpoint_changes([a], [a_moved]) == ([a_moved], [a])
    assert endpoint_changes([], []) == ([], [])
