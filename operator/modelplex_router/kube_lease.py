"""Which router makes the scaling decisions on Kubernetes, and the load every router reports to it.

Several router replicas serve the same models; the autoscaler must decide once. Two kinds of
coordination.k8s.io/v1 Lease in the served namespace, labelled with the routers' group (the served
MultiModel, or ``all``):

* **the scaling lease**, one object per *term*: ``modelplex-scaler-<group>-<term>``. The router holding
  the newest term leads while it renews the lease (``renewTime``) within ``leaseDurationSeconds``.
  When the newest term has expired (its holder died or lost the API), every router tries to *create*
  the next term; creating an object that exists fails (409) on the API server, so exactly one router
  wins each term. No two routers lead at once: a leader stops leading on its own clock once its last
  successful renewal is older than the duration minus one renewal interval, before any other router
  can see the term as expired.
* **a load lease per router**, ``modelplex-load-<router pod>``: its ``renewTime`` is the router's
  heartbeat and its ``modelplex.dev/load`` annotation its requests in flight plus waiting per model
  (JSON). The leader adds up the fresh ones (not expired) with its own.

The decisions are pure (``read_leases``, ``plan``); ``ScalingLease.sync`` does one round of API calls,
called from the autoscaler's tick (``SharedLoad.publish``), at most every ``renew_interval`` seconds.
A router that closes deletes its load lease and the term it holds, so another takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("modelplex_router.scaling")

LABEL_GROUP = "modelplex.dev/router-group"
LABEL_KIND = "modelplex.dev/lease"
ANNOTATION_LOAD = "modelplex.dev/load"
SCALER_PREFIX = "modelplex-scaler-"
LOAD_PREFIX = "modelplex-load-"


def _micro_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One Lease as the protocol reads it."""

    name: str
    kind: Literal["scaler", "load"]
    holder: str
    expires: float
    """Epoch seconds: renewTime + leaseDurationSeconds (0 when it was never renewed)."""
    term: int = 0
    load: Mapping[str, float] = field(default_factory=dict)


def read_leases(items: list[Mapping[str, Any]], group: str) -> list[LeaseView]:
    """The group's leases among ``items`` (a Lease list), skipping malformed ones."""
    views = []
    for item in items:
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        kind = labels.get(LABEL_KIND)
        if labels.get(LABEL_GROUP) != group or kind not in ("scaler", "load"):
            continue
        spec = item.get("spec") or {}
        renewed = _parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or 0
        expires = renewed + float(duration) if renewed is not None else 0.0
        name = str(meta.get("name", ""))
        holder = str(spec.get("holderIdentity") or "")
        if kind == "scaler":
            try:
                term = int(name.rsplit("-", 1)[-1])
            except ValueError:
                continue
            views.append(LeaseView(name, "scaler", holder, expires, term=term))
        else:
            views.append(LeaseView(name, "load", holder, expires, load=_loads(meta.get("annotations"))))
    return views


def _loads(annotations: Any) -> dict[str, float]:
    try:
        raw = json.loads((annotations or {}).get(ANNOTATION_LOAD) or "{}")
    except (ValueError, TypeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}


@dataclass(frozen=True, slots=True)
class Plan:
    action: Literal["renew", "take", "follow"]
    term: int
    """The term to renew or to create; the newest term when following."""
    others: Mapping[str, float]
    """Every other router's fresh load, added up per model."""
    stale_terms: tuple[str, ...] = ()
    """Older scaling leases the leader may delete."""


def plan(leases: list[LeaseView], me: str, now: float) -> Plan:
    """What this router does this round (see the module docstring)."""
    others: dict[str, float] = {}
    for lease in leases:
        if lease.kind == "load" and lease.holder != me and lease.expires > now:
            for model, value in lease.load.items():
                others[model] = others.get(model, 0.0) + value
    terms = sorted((lease for lease in leases if lease.kind == "scaler"), key=lambda lease: lease.term)
    if not terms:
        return Plan("take", 1, others)
    newest = terms[-1]
    stale = tuple(lease.name for lease in terms[:-1])
    if newest.expires <= now:
        # Expired, ours included (renewing it now could overlap a router that has just taken the next term).
        return Plan("take", newest.term + 1, others, tuple(lease.name for lease in terms))
    if newest.holder == me:
        return Plan("renew", newest.term, others, stale)
    return Plan("follow", newest.term, others)


# -- the API calls ------------------------------------------------------------------------------------

Call = Callable[[str, str, Any], Awaitable[Any]]
"""``call(verb, name, body)`` -> the parsed answer: verb in list / create / patch / delete; an
ApiException-like error with ``status`` on failure (``KubeBackend`` supplies it)."""


# Every lease call is bounded on its own: a renewal that hangs must not outlive the lease it renews.
_REQUEST_TIMEOUT_SECONDS = 5.0


def lease_request(api: Any, namespace: str, group: str, verb: str, name: str, body: Any) -> Awaitable[Any]:
    """The raw (``_preload_content=False``) CoordinationV1Api call behind a ``Call``."""
    raw = {"_preload_content": False, "_request_timeout": _REQUEST_TIMEOUT_SECONDS}
    if verb == "list":
        return api.list_namespaced_lease(namespace, label_selector=f"{LABEL_GROUP}={group}", **raw)
    if verb == "create":
        return api.create_namespaced_lease(namespace, body, **raw)
    if verb == "patch":
        return api.patch_namespaced_lease(name, namespace, body, _content_type="application/merge-patch+json", **raw)
    return api.delete_namespaced_lease(name, namespace, **raw)


class ScalingLease:
    def __init__(
        self, call: Call, group: str, identity: str, duration: float = 10.0, renew_interval: float = 2.0
    ) -> None:
        self._call = call
        self.group = group
        self.identity = identity
        self.duration = duration
        self.renew_interval = renew_interval
        self._held_until = 0.0  # monotonic
        self._term = 0
        self._others: Mapping[str, float] = {}
        self._last_sync = -float("inf")
        self._have_load_lease = False
        self._lock = asyncio.Lock()

    @property
    def leading(self) -> bool:
        return time.monotonic() < self._held_until

    def others(self, api_id: str) -> float:
        """Every other live router's latest reported load for the model."""
        return self._others.get(api_id, 0.0)

    async def sync(self, loads: Mapping[str, float]) -> None:
        """One round (at most every ``renew_interval``): report this router's load, read the others',
        renew or take the scaling lease."""
        if time.monotonic() - self._last_sync < self.renew_interval or self._lock.locked():
            return
        async with self._lock:
            started = time.monotonic()
            self._last_sync = started
            now = time.time()
            # A failed call leaves the lease as it was: a leader whose renewals fail stops leading once
            # its last successful one is too old (``leading``).
            await self._report(loads, now)
            listed = await self._call("list", "", None)
            current = plan(read_leases(list(listed.get("items", [])), self.group), self.identity, now)
            self._others = current.others
            await self._act(current, now, started)

    def _lease(self, name: str, kind: str, now: float, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": {LABEL_GROUP: self.group, LABEL_KIND: kind}}
        if annotations is not None:
            meta["annotations"] = annotations
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
            },
        }

    @property
    def _load_name(self) -> str:
        return f"{LOAD_PREFIX}{self.identity}"

    async def _report(self, loads: Mapping[str, float], now: float) -> None:
        annotations = {ANNOTATION_LOAD: json.dumps({k: v for k, v in sorted(loads.items()) if v})}
        if self._have_load_lease:
            try:
                await self._call(
                    "patch", self._load_name,
                    {"metadata": {"annotations": annotations}, "spec": {"renewTime": _micro_time(now)}},
                )  # fmt: skip
                return
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
        try:
            await self._call("create", "", self._lease(self._load_name, "load", now, annotations))
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
            # Left by an earlier process of this pod: take it over.
            await self._call("patch", self._load_name, {"metadata": {"annotations": annotations},
                                                        "spec": {"renewTime": _micro_time(now)}})  # fmt: skip
        self._have_load_lease = True

    async def _act(self, current: Plan, now: float, started: float) -> None:
        name = f"{SCALER_PREFIX}{self.group}-{current.term}"
        was_leading = self.leading
        if current.action == "follow":
            self._held_until = 0.0
        elif current.action == "renew":
            await self._call("patch", name, {"spec": {"renewTime": _micro_time(now)}})
            self._hold(current.term, started)
        else:
            try:
                await self._call("create", "", self._lease(name, "scaler", now))
            except Exception as exc:
                if getattr(exc, "status", None) != 409:
                    raise
                self._held_until = 0.0  # another router took this term first
            else:
                self._hold(current.term, started)
        if self.leading and current.stale_terms:
            for stale in current.stale_terms:
                await self._delete_quietly(stale)
        if self.leading != was_leading:
            log.info(
                "%s the scaling lease (term %d)", "holding" if self.leading else "not holding", current.term,
                extra={"term": current.term, "identity": self.identity},
            )  # fmt: skip

    def _hold(self, term: int, started: float) -> None:
        self._term = term
        # Others see the term expire at renewTime + duration on their clocks; stop one interval earlier.
        self._held_until = started + self.duration - self.renew_interval

    async def _delete_quietly(self, name: str) -> None:
        try:
            await self._call("delete", name, None)
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                log.warning("cannot delete lease %s: %s", name, exc)

    async def release(self) -> None:
        """Closing: delete this router's load lease and the term it holds (another takes over at once)."""
        leading, self._held_until = self.leading, 0.0
        if self._have_load_lease:
            await self._delete_quietly(self._load_name)
        if leading:
            await self._delete_quietly(f"{SCALER_PREFIX}{self.group}-{self._term}")
