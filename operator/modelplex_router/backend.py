"""The backend interface: where a model's replicas run (local processes, the pods of a Deployment).

The router's lifecycle logic (single-flight loads, waiting bounds, draining, idle unload, autoscaling)
lives in ``coordinator.py``, ``monitor.py`` and ``scaler.py`` and never depends on which backend is
used. A backend knows how to start a model's replicas, how many there should be, which of them are
ready and where, and how to stop them.

A model is a *set of replicas*: one or more runtime servers of the same entry (processes on this
machine, pods of the model's Deployment), each with its own URL. The backend publishes that set as
``Replicas`` (the count asked for, and every replica it knows with whether it takes new requests)
with a version that grows on every change; the router routes each request to one ready replica
(``routing.py``, picked in ``replica_pool.py``).

Contract for implementations (``LocalProcessBackend`` in ``local_backend.py``; ``KubeBackend`` in
``kube_backend.py``), which must behave the same:

* All methods are called from the router's event loop; the coroutines may await, ``replicas`` may not.
* The router serialises lifecycle calls per model: for one ``api_id`` it never calls ``ensure_started``,
  ``scale`` and ``stop`` concurrently. Calls for different models may run concurrently.
* ``ensure_started`` asks for the entry's first replicas (``entry.effective_scaling.floor``) unless at
  least that many are asked for already; it returns once that is requested (processes spawned,
  Deployment scaled), not when the weights are loaded. Idempotent.
* ``wait_ready`` waits until at least one replica is ready (answers its engine's readiness path with
  200) and returns the ``Replicas``. It raises ``BackendLoadError`` with a one-line reason users can
  act on when the model cannot start (every replica exited, a pod crash-loops, an image pull fails),
  and when ``timeout_seconds`` pass first. On failure the router calls ``stop`` itself.
* ``scale`` sets the count asked for (absolute, at least 1: zero is ``stop``) and returns once that is
  requested; new replicas join ``replicas`` when ready. ``remove`` names replicas to take away first
  when scaling down (the router has drained them: no request of this router runs on them); a backend
  that cannot choose (Kubernetes without permission to mark pods) may take others, which then drain
  on their own (a runtime finishes its requests on SIGTERM). ``reason`` says why, for the record
  (the Deployment's scaling annotation, the log).
* ``replicas`` is a cheap read of the current set (no I/O: the process table, the watch cache);
  ``replicas_changed`` waits (bounded) until its version passes the one given. A replica that goes
  away (scaled down, stopped, dead, a pod terminating) stops being ready first, then leaves the set;
  requests already running on it finish (or fail on their own if it died).
* A replica that dies while others of the model run is replaced by the backend, with a back-off
  (the kubelet restarts a crashed container; the local backend starts another process). When none is
  left running, the model has failed: ``observe`` says so and the router reports it.
* ``stop`` is idempotent: it asks every replica to exit (SIGTERM / scale to ``minReplicas``; the
  runtime drains its own in-flight requests), waits up to ``grace_seconds`` and then forces them
  (SIGKILL; on Kubernetes the kubelet kills pods past their termination grace period). It returns once
  they are gone (pods deleted, not only no longer counted), so their memory is free; the wait is
  bounded (Kubernetes: the longer of the pods' grace period and ``grace_seconds``, plus 15 s). The
  router has already drained its own in-flight requests before calling it.
* ``end_unresponsive`` is called when the router declared one replica hung (its health checks
  failed): the local backend kills that process at once (a frozen process does not act on SIGTERM)
  and replaces it if others of the model run; the Kubernetes backend leaves the pod to its liveness
  probe (the kubelet restarts the container).
* ``observe`` is cheap (no blocking I/O on the hot path; a cache read on Kubernetes) and is used by the
  router's monitor to notice a model whose replicas all died while loaded.
* ``close`` stops every runtime the backend started (local) or releases clients and watches
  (Kubernetes; there the Deployments outlive the router, so ``close`` must NOT scale them down).

Optional capability, for backends that start work ahead of the first request: ``Prestarting``. Its
``start`` is called once when the router starts (the local backend starts its spare runtimes, the
Kubernetes backend its watches there); ``spare_count`` says how many spares are waiting now.

Optional capability, for backends shared by several router replicas (Kubernetes): ``UsageRecorder``.
Its ``note_used`` records that this router used a model, for the others to see; the shared record
comes back in ``BackendObservation.last_used``, so a router does not idle-unload a model another one
is still serving. Backends without it (local: one router owns its runtimes) leave ``last_used`` None.

Optional capability, for backends shared by several router replicas: ``SharedLoad``. The autoscaler
decides once for all of them: ``leading`` is true in the one router that holds the scaling lease,
``publish`` shares this router's load per model, ``cluster_load`` adds up every router's latest
report. Without it (local) this router is the only one: it leads and its load is the model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelplex_spec import ModelEntry


class BackendLoadError(Exception):
    """The runtime could not be started or did not become ready; ``str(exc)`` is the reason."""


@dataclass(frozen=True, slots=True)
class Replica:
    """One runtime server of a model."""

    id: str
    """Unique for this server's lifetime (local: ``<api id>/<n>``; Kubernetes: the pod's name)."""
    url: str
    """Base URL (``http://host:port``, no trailing slash)."""
    ready: bool
    """Takes new requests: loaded and not going away."""


@dataclass(frozen=True, slots=True)
class Replicas:
    """A model's replicas as the backend knows them now."""

    desired: int = 0
    """How many are asked for (the Deployment's ``spec.replicas``; the local target count)."""
    members: tuple[Replica, ...] = ()
    """Every replica that exists (starting, ready or going away)."""
    version: int = 0
    """Grows with every change, so a reader can tell cheaply whether anything changed."""

    @property
    def ready(self) -> tuple[Replica, ...]:
        return tuple(r for r in self.members if r.ready)


@dataclass(frozen=True, slots=True)
class BackendObservation:
    """What the backend knows about one model's runtime right now."""

    running: bool
    """A runtime exists (starting or serving): a live process, or a Deployment with replicas > 0."""
    ready: bool
    """At least one replica is ready."""
    failed: bool = False
    """The model ended or cannot start for a reason other than ``stop`` (crash, OOM kill, bad image)."""
    message: str | None = None
    """Why it failed, one line (e.g. the runtime's own report or the pod's waiting reason)."""
    memory_bytes: int | None = None
    """Resident memory of its replicas when the backend can tell cheaply (local: process RSS)."""
    last_used: float | None = None
    """The latest time (epoch seconds) any router replica may have used the model, from the record
    shared through ``UsageRecorder.note_used``; None when the backend keeps no shared record."""


@runtime_checkable
class ModelBackend(Protocol):
    """Start, find, scale and stop a model's replicas. See the module docstring for the contract."""

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        """Ask for the model's first replicas unless that many are asked for already."""
        ...

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> Replicas:
        """Wait until a replica is ready; BackendLoadError on failure."""
        ...

    async def scale(self, api_id: str, replicas: int, *, reason: str, remove: Sequence[str] = ()) -> None:
        """Ask for ``replicas`` (>= 1) replicas; take the ones in ``remove`` away first."""
        ...

    def replicas(self, api_id: str) -> Replicas:
        """The model's replicas now (no I/O)."""
        ...

    async def replicas_changed(self, api_id: str, version: int, timeout_seconds: float) -> Replicas:
        """The replicas once their version passes ``version`` (or after the timeout, unchanged)."""
        ...

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        """Stop every replica (scale to the unloaded count) and return once they are gone."""
        ...

    async def end_unresponsive(self, api_id: str, replica_id: str) -> None:
        """The replica stopped answering: end it now, or leave it to the platform's own restart."""
        ...

    async def observe(self, api_id: str) -> BackendObservation:
        """Report whether the model runs, is ready or failed."""
        ...

    async def close(self) -> None:
        """Release the backend; the local backend stops every runtime it started."""
        ...


@runtime_checkable
class UsageRecorder(Protocol):
    """Optional: a backend that shares "last used" between router replicas (see the module docstring)."""

    async def note_used(self, api_id: str) -> None:
        """Record a use of the model for every replica to see. Cheap when called often: the backend
        throttles the writes itself, and ``BackendObservation.last_used`` allows for that throttle."""
        ...


@runtime_checkable
class Prestarting(Protocol):
    """Optional: a backend that prepares work before any model is asked for (see the module docstring)."""

    async def start(self) -> None:
        """Begin the preparation; returns at once."""
        ...

    @property
    def spare_count(self) -> int:
        """Runtimes prepared and waiting for a model now."""
        ...


@runtime_checkable
class SharedLoad(Protocol):
    """Optional: several routers share the models; one of them makes the scaling decisions."""

    @property
    def leading(self) -> bool:
        """This router holds the scaling lease now."""
        ...

    async def publish(self, loads: Mapping[str, float]) -> None:
        """This router's load (requests in flight + waiting) per model, for the leader to read;
        throttled by the backend."""
        ...

    def cluster_load(self, api_id: str, own: float) -> float:
        """``own`` plus the latest load every other live router reported for the model."""
        ...
