"""The router's own writes on a Deployment, kept over the watched object until the watch shows them.

After the router scales a Deployment (or patches its annotations) its Deployment watch may still
deliver an event from before that write, say a status update that carries the old ``spec.replicas``:
read as it is, the cache would flip back and undo the decision just made. So each write is kept as an
overlay (its merge patch) on the watched object until that object is at or after the write: it holds
the written values, or its ``resourceVersion`` is at or past the one the write answered (when both are
numbers, as the API server's are), or it comes from a list (or a GET) sent after the write was
answered. A write still kept after ``bound`` seconds is ``overdue``: the watch is asked to list again
(its event may have been lost, or somebody else wrote after it), and that list settles it. Pure
functions; ``kube_deployments.py`` applies them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Write:
    """A merge patch the router made on a Deployment, with the resourceVersion the API server answered."""

    patch: Mapping[str, Any]
    resource_version: str | None
    at: float  # monotonic seconds


def contains(obj: Any, patch: Any) -> bool:
    """``obj`` already holds every value of the merge patch."""
    if isinstance(patch, Mapping):
        return isinstance(obj, Mapping) and all(contains(obj.get(k), v) for k, v in patch.items())
    return bool(obj == patch)


def merged(obj: Any, patch: Any) -> Any:
    """``obj`` with the merge patch applied (a new object; ``obj`` is left as it is)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(obj) if isinstance(obj, Mapping) else {}
    for key, value in patch.items():
        out[key] = merged(out.get(key), value)
    return out


def _version(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def settled(write: Write, dep: Mapping[str, Any], read_since: float | None) -> bool:
    """The Deployment as read shows the write, or something after it: it holds the written values, or its
    resourceVersion is at or past the write's, or it was read by a request sent after the write had
    been answered (``read_since``: when the list behind the cache, or the GET, was sent)."""
    if contains(dep, write.patch) or (read_since is not None and read_since > write.at):
        return True
    written = _version(write.resource_version)
    seen = _version((dep.get("metadata") or {}).get("resourceVersion"))
    return written is not None and seen is not None and seen >= written


def with_writes(
    dep: Mapping[str, Any], writes: list[Write], read_since: float | None
) -> tuple[dict[str, Any], list[Write]]:
    """The Deployment as the router last wrote it, and the writes still to keep."""
    kept = [w for w in writes if not settled(w, dep, read_since)]
    out: dict[str, Any] = dict(dep)
    for write in kept:
        out = merged(out, write.patch)
    return out, kept


def overdue(writes: list[Write], now: float, bound: float) -> bool:
    """A write kept for ``bound`` seconds and still not shown: the watch may have lost its event (or a
    later write by somebody else hides it); a fresh list settles it either way."""
    return any(now - w.at >= bound for w in writes)
