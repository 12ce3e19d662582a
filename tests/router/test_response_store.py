"""The Responses API store: per key, bounded by count, bytes and time."""

from __future__ import annotations

from modelplex_router.apis.response_store import ResponseStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _response(n: int, text: str = "") -> dict:
    return {"id": f"resp_{n}", "model": "m", "output": text}


def test_a_response_belongs_to_the_key_that_created_it() -> None:
    store = ResponseStore(10, 1 << 20, 60)
    store.put(b"a", _response(1), [{"role": "user", "content": "hi"}])
    assert store.get(b"a", "resp_1").conversation == [{"role": "user", "content": "hi"}]
    assert store.get(b"b", "resp_1") is None
    assert store.delete(b"b", "resp_1") is False and store.get(b"a", "resp_1") is not None
    assert store.delete(b"a", "resp_1") is True and store.get(b"a", "resp_1") is None and len(store) == 0
    assert store.bytes == 0


def test_the_oldest_go_first_past_the_count_or_the_bytes() -> None:
    store = ResponseStore(3, 1 << 20, 60)
    for n in range(5):
        store.put(b"a", _response(n), [])
    assert [n for n in range(5) if store.get(b"a", f"resp_{n}")] == [2, 3, 4]
    small = ResponseStore(100, 300, 60)
    for n in range(5):
        small.put(b"a", _response(n, "x" * 80), [])
    kept = [n for n in range(5) if small.get(b"a", f"resp_{n}")]
    assert kept == [3, 4] and small.bytes <= 300
    assert small.put(b"a", _response(9, "x" * 400), []) is False and small.get(b"a", "resp_9") is None


def test_responses_expire() -> None:
    clock = Clock()
    store = ResponseStore(10, 1 << 20, 60, clock)
    store.put(b"a", _response(1), [])
    clock.now += 30
    store.put(b"a", _response(2), [])
    clock.now += 31
    assert store.get(b"a", "resp_1") is None and store.get(b"a", "resp_2") is not None
    assert len(store) == 1
    clock.now += 30
    assert len(store) == 0 and store.bytes == 0
