"""The model lifecycle as a pure transition function.

    unloaded --load--> loading --ready--> loaded --unload--> draining --stopped--> unloaded
                          |                  |
                          +--load_failed--> failed (load again: after the back-off, see backoff.py)
                                             ^
                          loaded --crashed---+  (the runtime died)
                          loaded --hung------+  (it stopped answering its health checks)

Every side effect (starting processes, waiting, draining) happens in ``coordinator.py``; this module
only says which moves are legal, so the rules can be tested without processes or an event loop.
"""

from __future__ import annotations

from enum import StrEnum


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    DRAINING = "draining"
    FAILED = "failed"


class Event(StrEnum):
    LOAD = "load"
    READY = "ready"
    LOAD_FAILED = "load_failed"
    UNLOAD = "unload"
    STOPPED = "stopped"
    CRASHED = "crashed"
    HUNG = "hung"


class InvalidTransition(Exception):
    def __init__(self, state: ModelState, event: Event) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


_TRANSITIONS: dict[tuple[ModelState, Event], ModelState] = {
    (ModelState.UNLOADED, Event.LOAD): ModelState.LOADING,
    (ModelState.FAILED, Event.LOAD): ModelState.LOADING,
    (ModelState.LOADING, Event.READY): ModelState.LOADED,
    (ModelState.LOADING, Event.LOAD_FAILED): ModelState.FAILED,
    # Unloading a model that is still loading abandons the load.
    (ModelState.LOADING, Event.UNLOAD): ModelState.DRAINING,
    (ModelState.LOADED, Event.UNLOAD): ModelState.DRAINING,
    (ModelState.LOADED, Event.CRASHED): ModelState.FAILED,
    (ModelState.LOADED, Event.HUNG): ModelState.FAILED,
    (ModelState.DRAINING, Event.STOPPED): ModelState.UNLOADED,
    # A failed model has no runtime left; unloading it just clears the failure.
    (ModelState.FAILED, Event.UNLOAD): ModelState.DRAINING,
}


def transition(state: ModelState, event: Event) -> ModelState:
    """The state after ``event``; InvalidTransition when the event makes no sense in ``state``."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def api_status(state: ModelState) -> str:
    """The status word of the API (mistral.rs's vocabulary plus ``failed``).

    A draining model reports ``unloaded``: the unload was accepted, only in-flight requests remain,
    and a new request waits for the drain and then loads it again.
    """
    return {
        ModelState.UNLOADED: "unloaded",
        ModelState.LOADING: "reloading",
        ModelState.LOADED: "loaded",
        ModelState.DRAINING: "unloaded",
        ModelState.FAILED: "failed",
    }[state]


def accepts_requests(state: ModelState) -> bool:
    """Whether a request can be forwarded right now without waiting."""
    return state is ModelState.LOADED


def idle_unload_due(
    idle_timeout: float | None,
    pinned: bool,
    busy: bool,
    idle_here: float,
    idle_shared: float | None,
) -> bool:
    """Whether a loaded model should be unloaded for idleness.

    ``idle_here``: seconds since this router last used it; ``idle_shared``: seconds since any router
    replica may have used it (None when the backend keeps no shared record). Both must have passed the
    timeout, so one replica never unloads a model that another one is serving.
    """
    if idle_timeout is None or pinned or busy or idle_here < idle_timeout:
        return False
    return idle_shared is None or idle_shared >= idle_timeout
