"""The model state machine (pure)."""

from __future__ import annotations

import pytest

from modelplex_router.lifecycle import (
    Event,
    InvalidTransition,
    ModelState,
    accepts_requests,
    api_status,
    idle_unload_due,
    transition,
)


def test_load_unload_cycle() -> None:
    state = ModelState.UNLOADED
    for event, expected in [
        (Event.LOAD, ModelState.LOADING),
        (Event.READY, ModelState.LOADED),
        (Event.UNLOAD, ModelState.DRAINING),
        (Event.STOPPED, ModelState.UNLOADED),
    ]:
        state = transition(state, event)
        assert state is expected


def test_failed_load_is_retryable_and_crash_fails() -> None:
    assert transition(ModelState.LOADING, Event.LOAD_FAILED) is ModelState.FAILED
    assert transition(ModelState.FAILED, Event.LOAD) is ModelState.LOADING
    assert transition(ModelState.LOADED, Event.CRASHED) is ModelState.FAILED
    assert transition(ModelState.LOADED, Event.HUNG) is ModelState.FAILED
    assert transition(ModelState.FAILED, Event.UNLOAD) is ModelState.DRAINING


def test_unload_while_loading_abandons_the_load() -> None:
    assert transition(ModelState.LOADING, Event.UNLOAD) is ModelState.DRAINING


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (ModelState.UNLOADED, Event.READY),
        (ModelState.UNLOADED, Event.UNLOAD),
        (ModelState.LOADED, Event.LOAD),
        (ModelState.DRAINING, Event.LOAD),
        (ModelState.DRAINING, Event.READY),
        (ModelState.LOADING, Event.LOAD),
        (ModelState.LOADING, Event.HUNG),
        (ModelState.FAILED, Event.HUNG),
    ],
)
def test_nonsense_moves_are_refused(state: ModelState, event: Event) -> None:
    with pytest.raises(InvalidTransition, match=event.value):
        transition(state, event)


def test_api_status_words_and_serving() -> None:
    assert [api_status(s) for s in ModelState] == ["unloaded", "reloading", "loaded", "unloaded", "failed"]
    assert [s for s in ModelState if accepts_requests(s)] == [ModelState.LOADED]


def test_idle_unload_needs_every_router_replica_to_be_idle() -> None:
    # Only this router's view (local backend): idle here for the timeout is enough.
    assert idle_unload_due(60, pinned=False, busy=False, idle_here=61, idle_shared=None)
    assert not idle_unload_due(60, pinned=False, busy=False, idle_here=59, idle_shared=None)
    # Another replica used the model recently: not idle, however long this one has been.
    assert not idle_unload_due(60, pinned=False, busy=False, idle_here=600, idle_shared=5)
    assert idle_unload_due(60, pinned=False, busy=False, idle_here=600, idle_shared=60)
    # The shared record may lag behind this replica's own use: that still counts.
    assert not idle_unload_due(60, pinned=False, busy=False, idle_here=5, idle_shared=600)
    # "Used until a moment from now" (the record allows for its write throttle) is not idle either.
    assert not idle_unload_due(60, pinned=False, busy=False, idle_here=600, idle_shared=-3)
    for idle_timeout, pinned, busy in [(None, False, False), (60, True, False), (60, False, True)]:
        assert not idle_unload_due(idle_timeout, pinned=pinned, busy=busy, idle_here=600, idle_shared=600)
