"""The backend interface: where a model's runtime runs (a local process, a Kubernetes Deployment).

The router's lifecycle logic (single-flight loads, waiting bounds, draining, idle unload) lives in
``modelplex_router.coordinator`` and never depends on which backend is used. A backend only knows how
to start a model's runtime, tell when it is ready and where, and stop it.

Contract for implementations (``LocalProcessBackend`` in ``local_backend.py``; the Kubernetes backend
in ``kube_backend.py``):

* All methods are coroutines and are called from the router's event loop.
* The router serialises lifecycle calls per model: for one ``api_id`` it never calls ``ensure_started``
  and ``stop`` concurrently. Calls for different models may run concurrently.
* ``ensure_started`` is idempotent: when the runtime is already starting or running it does nothing.
  It returns as soon as the start has been requested (process spawned, Deployment scaled to >= 1);
  it does not wait for the weights to load.
* ``wait_ready`` waits until the runtime answers ``GET /ready`` with 200 and returns its base URL
  (``http://host:port``, no trailing slash). It raises ``BackendLoadError`` with a one-line reason
  users can act on when the runtime failed (process exited, pod crash-looping, image pull error), and
  ``BackendLoadError`` as well when ``timeout_seconds`` pass first. It never leaves the runtime
  half-stopped: on failure the router calls ``stop`` itself.
* ``stop`` is idempotent: it asks the runtime to exit (SIGTERM / scale to zero; the runtime drains
  its own in-flight requests), waits up to ``grace_seconds`` and then forces it (SIGKILL; on
  Kubernetes the kubelet kills pods past their termination grace period). It returns once the runtime
  is gone (its pods deleted, not only no longer counted), so its memory is free; the wait is bounded
  (Kubernetes: the longer of the pods' grace period and ``grace_seconds``, plus 15 s). The router has
  already drained its own in-flight requests before calling it.
* ``end_unresponsive`` is called when the router declared a loaded runtime hung (its health checks
  failed): the local backend kills the process at once (a frozen process does not act on SIGTERM);
  the Kubernetes backend leaves the pod to its liveness probe (the kubelet restarts the container) and
  a later ``wait_ready`` waits for it to be ready again.
* ``observe`` is cheap (no blocking I/O on the hot path of the local backend; one API read on
  Kubernetes) and is used by the router's monitor to notice a runtime that died while loaded.
* ``close`` stops every runtime the backend started (local) or releases clients (Kubernetes; there the
  Deployments outlive the router, so ``close`` must NOT scale them down).

Optional capability, for backends that start work ahead of the first request: ``Prestarting``. Its
``start`` is called once when the router starts (the local backend starts its spare runtimes there);
``spare_count`` says how many are waiting now.

Optional capability, for backends shared by several router replicas (Kubernetes): ``UsageRecorder``.
Its ``note_used`` records that this replica used a model, for the others to see; the shared record
comes back in ``BackendObservation.last_used``, so a replica does not idle-unload a model another one
is still serving. Backends without it (local: one router owns its runtimes) leave ``last_used`` None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from modelplex_spec import ModelEntry


class BackendLoadError(Exception):
    """The runtime could not be started or did not become ready; ``str(exc)`` is the reason."""


@dataclass(frozen=True, slots=True)
class BackendObservation:
    """What the backend knows about one model's runtime right now."""

    running: bool
    """A runtime exists (starting or serving): a live process, or a Deployment with replicas > 0."""
    ready: bool
    """The runtime answered /ready with 200 (the last time the backend looked)."""
    failed: bool = False
    """The runtime ended or cannot start for a reason other than ``stop`` (crash, OOM kill, bad image)."""
    message: str | None = None
    """Why it failed, one line (e.g. the runtime's last stderr line or the pod's waiting reason)."""
    url: str | None = None
    """Base URL of the runtime when running."""
    memory_bytes: int | None = None
    """Resident memory of the runtime when the backend can tell cheaply (local: process RSS)."""
    last_used: float | None = None
    """The latest time (epoch seconds) any router replica may have used the model, from the record
    shared through ``UsageRecorder.note_used``; None when the backend keeps no shared record."""


@runtime_checkable
class ModelBackend(Protocol):
    """Start, find and stop one runtime per model. See the module docstring for the contract."""

    async def ensure_started(self, api_id: str, entry: ModelEntry) -> None:
        """Start the model's runtime (scale up) unless it is already starting or running."""
        ...

    async def wait_ready(self, api_id: str, timeout_seconds: float) -> str:
        """Wait until the runtime is ready and return its base URL; BackendLoadError on failure."""
        ...

    async def stop(self, api_id: str, grace_seconds: float) -> None:
        """Stop the runtime (scale to zero) and return once it is gone; no-op when not running."""
        ...

    async def end_unresponsive(self, api_id: str) -> None:
        """The runtime stopped answering: end it now, or leave it to the platform's own restart."""
        ...

    async def observe(self, api_id: str) -> BackendObservation:
        """Report whether the runtime is running, ready or failed."""
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
    """Optional: a backend that prepares runtimes before any model is asked for (local spare runtimes)."""

    async def start(self) -> None:
        """Begin the preparation; returns at once."""
        ...

    @property
    def spare_count(self) -> int:
        """Runtimes prepared and waiting for a model now."""
        ...
