"""Unit tests for what the router refuses in a body (modelplex_router.request_body)."""

from __future__ import annotations

import json

import pytest

from modelplex_router.errors import BadRequest, UnsupportedMediaType
from modelplex_router.request_body import (
    check_json_content_type,
    check_nesting,
    check_routing_fields,
    encode_json,
    is_json_media_type,
    parse_json_object,
)


@pytest.mark.parametrize(
    "value", ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
)
def test_json_media_types(value: str) -> None:
    assert is_json_media_type(value)
    check_json_content_type(value)


@pytest.mark.parametrize("value", [None, "", "text/plain", "application/x-www-form-urlencoded", "text/json+x"])
def test_other_media_types_are_415(value: str | None) -> None:
    assert not is_json_media_type(value)
    with pytest.raises(UnsupportedMediaType, match="Content-Type: application/json"):
        check_json_content_type(value)


def test_valid_surrogate_pairs_and_escaped_backslashes_pass() -> None:
    # An escaped pair is one character outside the BMP; "\\ud800" is a backslash and letters.
    body = json.dumps({"prompt": "smile \U0001f600", "stop": ["\\ud800"]}).encode()
    assert b"\\ud83d\\ude00" in body
    assert parse_json_object(body) == {"prompt": "smile \U0001f600", "stop": ["\\ud800"]}


def test_a_lone_surrogate_is_named_by_its_path() -> None:
    body = b'{"messages": [{"content": "ok"}, {"content": [{"type": "text", "text": "\\udbff!"}]}]}'
    with pytest.raises(BadRequest) as err:
        parse_json_object(body)
    assert err.value.param == "messages[1].content[0].text"
    assert "lone UTF-16 surrogate" in err.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 50_000, "nests JSON too deeply"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": ' + b"1" * 10_000 + b"}", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_bodies_that_are_not_a_json_object(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_json_object(body)


def test_an_empty_management_body_is_an_empty_object() -> None:
    assert parse_json_object(b"  ", empty_ok=True) == {}


@pytest.mark.parametrize(
    ("payload", "param"),
    [({"model": 1}, "model"), ({"model": None, "stream": "yes"}, "stream"), ({"stream": 0}, "stream")],
)
def test_routing_fields_of_the_wrong_type(payload: dict, param: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_routing_fields(payload)
    assert err.value.param == param


def test_routing_fields_that_are_fine() -> None:
    for payload in ({}, {"model": None, "stream": None}, {"model": "m", "stream": True}):
        check_routing_fields(payload)


def test_encode_json_is_compact_utf8() -> None:
    assert encode_json({"model": "m", "prompt": "héllo"}) == '{"model":"m","prompt":"héllo"}'.encode()


def _nest(depth: int) -> list:
    """``depth`` arrays inside each other."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_passes_and_past_it_names_the_field() -> None:
    check_nesting({"a": _nest(3)}, 4)  # the body, then three arrays
    check_nesting({"a": 1, "b": "x", "c": [], "d": {}}, 2)
    with pytest.raises(BadRequest, match=r"^a\[0\]\[0\]: JSON nested more than 3 levels deep") as deep:
        check_nesting({"a": _nest(3), "b": [1]}, 3)
    assert deep.value.param == "a[0][0]"
    # The path names the first levels only; a depth far past any stack still gets its clear 400.
    with pytest.raises(BadRequest) as far:
        check_nesting({"tools": [{"input_schema": {"x": _nest(200_000)}}]}, 128)
    assert far.value.param == "tools[0].input_schema.x[0][0]"
