"""Pure access logic: keys file parsing, hashing, scopes, sliding windows, concurrency, request bounds."""

from __future__ import annotations

import hashlib
import json

import pytest

from modelplex_router.auth import KeysFileError, parse_access_file, presented_key
from modelplex_router.key_source import KeySource
from modelplex_router.limits import (
    BoundError,
    LimitBook,
    Limits,
    OverLimit,
    RequestBounds,
    SlidingWindow,
    check_bounds,
    check_max_tokens,
)

KEY_A = "team-a-key-0123456789"
KEY_B = "team-b-key-0123456789"


def _file(**extra) -> str:
    return json.dumps(
        {
            "keys": [
                {"name": "team-a", "key": KEY_A, "models": ["tiny-*"], "limits": {"rpm": 2}},
                {"name": "ops", "sha256": hashlib.sha256(KEY_B.encode()).hexdigest(), "manage": True},
            ],
            **extra,
        }
    )


def test_keys_are_hashed_and_scoped() -> None:
    ring = parse_access_file(_file(model_limits={"tiny-*": {"concurrent": 1}}))
    a = ring.authenticate(KEY_A)
    assert a is not None and a.name == "team-a" and not a.manage and a.limits.rpm == 2
    assert a.can_use("tiny-chat") and not a.can_use("big-chat")
    ops = ring.authenticate(KEY_B)
    assert ops is not None and ops.manage and ops.can_use("anything")
    assert ring.authenticate("wrong-key-0123456789") is None and ring.authenticate(None) is None
    assert all(KEY_A not in repr(p) for p in ring.principals)
    assert [lim.concurrent for lim in ring.limits_for_model("tiny-x")] == [1]
    assert ring.limits_for_model("other") == []


def test_admin_key_from_env_and_empty_file_is_open() -> None:
    assert parse_access_file("").open
    ring = parse_access_file("", extra_admin_key="admin-key-0123456789")
    admin = ring.authenticate("admin-key-0123456789")
    assert admin is not None and admin.name == "admin" and admin.manage


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        (json.dumps({"keys": [{"name": "x"}]}), "exactly one of"),
        (json.dumps({"keys": [{"name": "x", "sha256": "zz"}]}), "64 hex digits"),
        (json.dumps({"keys": [{"name": "x", "key": "short"}]}), "keys.0.key"),
        (json.dumps({"keys": [{"name": "x", "key": KEY_A}, {"name": "x", "key": KEY_B}]}), "unique"),
        (json.dumps({"keys": [], "bogus": 1}), "bogus"),
    ],
)
def test_invalid_keys_files_name_the_problem_not_the_key(text: str, problem: str) -> None:
    with pytest.raises(KeysFileError) as info:
        parse_access_file(text)
    assert problem in str(info.value)
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value)


def test_presented_key_headers() -> None:
    assert presented_key("Bearer abc", None) == "abc"
    assert presented_key("bearer  abc ", None) == "abc"
    assert presented_key(None, "xyz") == "xyz"
    assert presented_key("Basic abc", "xyz") == "xyz"
    assert presented_key("Bearer ", None) is None


def test_key_source_reloads_on_change_and_keeps_keys_on_a_bad_edit(tmp_path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(_file())
    now = [0.0]
    source = KeySource(str(path), check_interval=1.0, clock=lambda: now[0])
    assert source.current().authenticate(KEY_A) is not None
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"keys": [{"name": "c", "key": "rotated-key-0123456789"}]}))
    new.replace(path)
    assert source.current().authenticate(KEY_A) is not None  # not re-checked within check_interval
    now[0] = 1.5
    assert source.current().authenticate(KEY_A) is None
    assert source.current().authenticate("rotated-key-0123456789") is not None
    now[0] = 5.0
    path.write_text("{ broken")
    assert source.current().authenticate("rotated-key-0123456789") is not None
    with pytest.raises(KeysFileError):
        KeySource(str(tmp_path / "missing.json"))


def test_sliding_window_retry_after() -> None:
    now = [100.0]
    window = SlidingWindow(60.0, clock=lambda: now[0])
    for _ in range(2):
        assert window.retry_after("k", 2) == 0
        window.record("k")
        now[0] += 10
    assert window.retry_after("k", 2) == 40
    now[0] = 160.5
    assert window.retry_after("k", 2) == 0


def test_limit_book_counts_everywhere_or_nowhere() -> None:
    now = [0.0]
    book = LimitBook(clock=lambda: now[0])
    key, model = Limits(concurrent=2), Limits(concurrent=1, rpm=5)
    first = book.admit([("key a", key), ("model m", model)])
    with pytest.raises(OverLimit) as info:
        book.admit([("key a", key), ("model m", model)])
    assert info.value.retry_after == 1 and "model m" in info.value.message
    assert book.concurrency.count("key a") == 1  # the refused request took nothing
    first.release()
    first.release()
    assert book.concurrency.count("key a") == 0
    for _ in range(4):
        book.admit([("model m", model)]).release()
    with pytest.raises(OverLimit) as info:
        book.admit([("model m", model)])
    assert info.value.retry_after == 60


def test_request_bounds_name_the_field() -> None:
    bounds = RequestBounds(max_messages=2, max_images=1, max_input_chars=10)
    check_bounds({"messages": [{"role": "user", "content": "hi"}]}, bounds)
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    cases = [
        ({"messages": [{"content": "a"}] * 3}, "messages", "3 messages"),
        ({"messages": [{"content": [image, image]}]}, "messages", "2 images"),
        ({"messages": [{"content": [{"type": "text", "text": "x" * 11}]}]}, "messages", "11 characters"),
        ({"prompt": ["x" * 6, "y" * 6]}, "prompt", "12 characters"),
        ({"input": "x" * 11}, "input", "11 characters"),
    ]
    for payload, param, text in cases:
        with pytest.raises(BoundError) as info:
            check_bounds(payload, bounds)
        assert info.value.param == param and text in info.value.message
    check_max_tokens({"max_tokens": 100}, [])
    check_max_tokens({"max_tokens": 10}, [10, 20])
    with pytest.raises(BoundError) as info:
        check_max_tokens({"max_completion_tokens": 11}, [20, 10])
    assert info.value.param == "max_completion_tokens"
    # the cap covers every sequence a request generates: n per prompt, times the prompts
    check_max_tokens({"max_tokens": 5, "n": 2}, [10])
    with pytest.raises(BoundError, match="6 x 2 sequences"):
        check_max_tokens({"max_tokens": 6, "n": 2}, [10])
    with pytest.raises(BoundError, match="4 x 3 sequences"):
        check_max_tokens({"max_tokens": 4, "prompt": ["a", "b", "c"]}, [10])
    check_max_tokens({"max_tokens": 4, "prompt": [1, 2, 3], "n": True}, [10])  # token ids: one prompt; bool n ignored
