"""Hostile bodies (tests/router/hostile_bodies.py) against a live router: each gets its 4xx in the
error shape of the API it was sent to (OpenAI's, or Anthropic's on the Messages paths), none reaches a
runtime, and the router neither crashes nor logs a traceback."""

from __future__ import annotations

import httpx
import pytest

from modelplex_router.app import PROXIED_PATHS
from router.hostile_bodies import CASES, MESSAGE_PATHS, RESPONSES, TRANSLATED_CASES

pytestmark = pytest.mark.integration

MODELS = {"a": {"alias": "alpha", "Plain": {"model_id": "org/alpha"}}}
MANAGEMENT = ("/v1/models/status", "/v1/models/unload", "/v1/models/reload", "/v1/models/default")
# Anthropic's error type for each status the corpus gets.
ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 415: "invalid_request_error"}


def _send(client: httpx.Client, path: str, content_type: str | None, body: bytes) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


def _assert_error_shape(reply: httpx.Response) -> dict:
    assert reply.headers["content-type"].startswith("application/json"), reply.text[:200]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def _assert_anthropic_error(reply: httpx.Response, status: int, names: str | None, case: str) -> None:
    """``{"type": "error", "error": {"type", "message"}}``, the type following the status; Anthropic's
    errors have no ``param``, so the message names the field."""
    assert reply.status_code == status, (case, reply.text[:300])
    assert reply.headers["content-type"].startswith("application/json"), reply.text[:200]
    body = reply.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, (case, body)
    assert body["error"]["type"] == ANTHROPIC_TYPES[status], (case, body)
    message = body["error"]["message"]
    if case.startswith("deep-") and "nests JSON too deeply" in message:
        return
    if names is not None:
        assert names in message, (case, body)


def _names(error: dict, param: str, case: str) -> bool:
    """The OpenAI error's ``param`` is the field (for a "deep-" case: starts with it, or the parser gave up)."""
    if case.startswith("deep-"):
        given = error["param"]
        return given.startswith(param) if given else "nests JSON too deeply" in error["message"]
    return error["param"] == param


def test_hostile_bodies_get_their_4xx_and_never_reach_a_runtime(router_factory) -> None:
    router = router_factory(MODELS)
    with router.client() as client:
        for case_id, content_type, body, status, code, param in CASES:
            for path in (*PROXIED_PATHS, RESPONSES):
                reply = _send(client, path, content_type, body)
                assert reply.status_code == status, (case_id, path, reply.text[:300])
                error = _assert_error_shape(reply)
                assert error["code"] == code, (case_id, path, error)
                if param is not None:
                    assert error["param"] == param, (case_id, path, error)
            for path in MESSAGE_PATHS:
                _assert_anthropic_error(_send(client, path, content_type, body), status, param, f"{case_id} {path}")
            for path in MANAGEMENT:
                reply = _send(client, path, content_type, body)
                assert 400 <= reply.status_code < 500, (case_id, path, reply.text[:300])
                _assert_error_shape(reply)
        for case_id, path, body, param in TRANSLATED_CASES:
            reply = _send(client, path, "application/json", body)
            if path == RESPONSES:
                assert reply.status_code == 400, (case_id, reply.text[:300])
                error = _assert_error_shape(reply)
                assert error["code"] == "invalid_request" and _names(error, param, case_id), (case_id, error)
            else:
                _assert_anthropic_error(reply, 400, param, f"{case_id} {path}")
        # A well-formed request still works afterwards, and only it started a runtime.
        ok = client.post("/v1/chat/completions", json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200, ok.text
    assert len(router.starts("alpha")) == 1
    assert router.proc.poll() is None
    log = router.log_path.read_text()
    assert "Traceback" not in log and "unexpected error" not in log
    assert router.metric("modelplex_requests_total", code="500") == 0
