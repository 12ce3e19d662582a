"""A model's ready pods, read from its Service's EndpointSlices (pure: no API calls; the watch is
``kube_endpoints.py``).

The EndpointSlice controller keeps one or more ``discovery.k8s.io/v1`` EndpointSlices per Service,
labelled ``kubernetes.io/service-name``; each endpoint is one pod (``targetRef``), with its addresses
and ``conditions``. A pod takes requests when its endpoint is ``ready`` and not ``terminating`` (a pod
being deleted turns ``ready`` false at once, and may stay listed as ``terminating`` while it drains).
The runtime's port is found by its name in the slice's ``ports`` (the operator names it ``http``), or
by number when a slice names none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LABEL_SERVICE_NAME = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True, order=True)
class PodEndpoint:
    """One pod of a Service, as its EndpointSlice lists it."""

    pod: str
    address: str
    port: int
    ready: bool

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address  # IPv6
        return f"http://{host}:{self.port}"


def service_of(endpoint_slice: Mapping[str, Any]) -> str | None:
    """The Service an EndpointSlice belongs to (its ``kubernetes.io/service-name`` label)."""
    labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
    name = labels.get(LABEL_SERVICE_NAME)
    return name if isinstance(name, str) and name else None


def _port(endpoint_slice: Mapping[str, Any], port_name: str, port_number: int) -> int | None:
    ports = endpoint_slice.get("ports") or []
    for port in ports:
        if port.get("name") == port_name and isinstance(port.get("port"), int):
            return int(port["port"])
    for port in ports:
        if port.get("port") == port_number:
            return port_number
    return None


def pod_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str, port_number: int
) -> list[PodEndpoint]:
    """Every pod the slices list (ready or not), sorted by pod name; one entry per pod.

    Skipped: slices without the runtime's port or of another address type than IPv4/IPv6, endpoints
    without a pod ``targetRef`` or an address. A pod listed twice (slices overlap while the controller
    moves endpoints between them) counts as ready when any listing says so.
    """
    found: dict[str, PodEndpoint] = {}
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        port = _port(endpoint_slice, port_name, port_number)
        if port is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            addresses = endpoint.get("addresses") or []
            if ref.get("kind", "Pod") != "Pod" or not ref.get("name") or not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            # ``ready`` unset means ready (the API's own reading); a terminating pod never takes new requests.
            ready = conditions.get("ready") is not False and conditions.get("terminating") is not True
            pod = str(ref["name"])
            if pod in found and found[pod].ready and not ready:
                continue
            found[pod] = PodEndpoint(pod, str(addresses[0]), port, ready)
    return sorted(found.values())


def ready_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str, port_number: int
) -> list[PodEndpoint]:
    """The pods that take requests: ready and not terminating."""
    return [ep for ep in pod_endpoints(slices, port_name, port_number) if ep.ready]


def endpoint_changes(
    before: Iterable[PodEndpoint], after: Iterable[PodEndpoint]
) -> tuple[list[PodEndpoint], list[PodEndpoint]]:
    """(pods that joined the ready set, pods that left it), each sorted by pod name."""
    old = {ep.pod: ep for ep in before if ep.ready}
    new = {ep.pod: ep for ep in after if ep.ready}
    joined = [ep for pod, ep in sorted(new.items()) if old.get(pod) != ep]
    left = [ep for pod, ep in sorted(old.items()) if new.get(pod) != ep]
    return joined, left
