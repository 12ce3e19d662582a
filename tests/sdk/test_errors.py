"""HTTP error answers map to typed exceptions carrying the server's message, type, code and Retry-After."""

from __future__ import annotations

import json

import pytest

import modelplex
from modelplex.errors import error_from_response, error_from_stream_chunk, parse_retry_after


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}})


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, modelplex.BadRequestError),
        (422, modelplex.BadRequestError),
        (401, modelplex.AuthenticationError),
        (403, modelplex.AuthenticationError),
        (404, modelplex.ModelNotFoundError),
        (429, modelplex.RateLimitError),
        (503, modelplex.ServiceUnavailableError),
        (500, modelplex.InternalServerError),
        (502, modelplex.InternalServerError),
        (409, modelplex.ModelplexError),
    ],
)
def test_status_picks_the_class(status: int, cls: type[modelplex.ModelplexError]) -> None:
    err = error_from_response(status, {}, openai_error("nope", code="some_code"))
    assert type(err) is cls
    assert (err.status_code, err.message, err.type, err.code) == (
        status,
        "nope",
        "invalid_request_error",
        "some_code",
    )
    assert str(err) == f"nope (HTTP {status})"


def test_503_with_retry_after_is_a_loading_model() -> None:
    err = error_from_response(503, {"retry-after": "7"}, openai_error("still loading", "service_unavailable"))
    assert isinstance(err, modelplex.ModelLoadingError)
    assert isinstance(err, modelplex.ServiceUnavailableError)
    assert err.retry_after == 7.0


def test_429_carries_retry_after() -> None:
    err = error_from_response(429, {"retry-after": "2.5"}, openai_error("busy", "rate_limit_error"))
    assert isinstance(err, modelplex.RateLimitError)
    assert err.retry_after == 2.5


def test_load_failure_code_wins_over_status() -> None:
    err = error_from_response(
        500, {}, openai_error("failed to load: OOM", "server_error", "model_load_failed")
    )
    assert isinstance(err, modelplex.ModelLoadFailedError)
    assert err.message == "failed to load: OOM"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"detail": "Not Found"}', "Not Found"),
        ('{"error": "plain string error"}', "plain string error"),
        ("<html>bad gateway</html>", "<html>bad gateway</html>"),
        ("", "HTTP 502 with an empty body"),
    ],
)
def test_other_error_shapes_keep_a_readable_message(text: str, message: str) -> None:
    assert error_from_response(502, {}, text).message == message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10", 10.0), (" 3 ", 3.0), ("-1", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_stream_error_chunk() -> None:
    err = error_from_stream_chunk(
        {"error": {"message": "runtime crashed", "type": "server_error", "code": "x"}}
    )
    assert type(err) is modelplex.ModelplexError
    assert (err.message, err.type, err.code, err.status_code) == (
        "runtime crashed",
        "server_error",
        "x",
        None,
    )
    failed = error_from_stream_chunk({"error": {"message": "load failed", "code": "model_load_failed"}})
    assert isinstance(failed, modelplex.ModelLoadFailedError)
