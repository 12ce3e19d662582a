"""The model state machine (pure)."""

from __future__ import annotations

import pytest

from modelplex_router.lifecycle import (
    Event,
    InvalidTransition,
    ModelState,
    accepts_requests,
    api_status,
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
    ],
)
def test_nonsense_moves_are_refused(state: ModelState, event: Event) -> None:
    with pytest.raises(InvalidTransition, match=event.value):
        transition(state, event)


def test_api_status_words_and_serving() -> None:
    assert [api_status(s) for s in ModelState] == ["unloaded", "reloading", "loaded", "unloaded", "failed"]
    assert [s for s in ModelState if accepts_requests(s)] == [ModelState.LOADED]
