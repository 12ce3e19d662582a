"""Hostile bodies (tests/router/hostile_bodies.py) against a live router: each gets its 4xx in OpenAI's
error shape, none reaches a runtime, and the router neither crashes nor logs a traceback."""

from __future__ import annotations

import httpx
import pytest

from modelplex_router.app import PROXIED_PATHS
from router.hostile_bodies import CASES

pytestmark = pytest.mark.integration

MODELS = {"a": {"alias": "alpha", "Plain": {"model_id": "org/alpha"}}}
MANAGEMENT = ("/v1/models/status", "/v1/models/unload", "/v1/models/reload", "/v1/models/default")


def _send(client: httpx.Client, path: str, content_type: str | None, body: bytes) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


def _assert_error_shape(reply: httpx.Response) -> dict:
    assert reply.headers["content-type"].startswith("application/json"), reply.text[:200]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_hostile_bodies_get_their_4xx_and_never_reach_a_runtime(router_factory) -> None:
    router = router_factory(MODELS)
    with router.client() as client:
        for case_id, content_type, body, status, code, param in CASES:
            for path in PROXIED_PATHS:
                reply = _send(client, path, content_type, body)
                assert reply.status_code == status, (case_id, path, reply.text[:300])
                error = _assert_error_shape(reply)
                assert error["code"] == code, (case_id, path, error)
                if param is not None:
                    assert error["param"] == param, (case_id, path, error)
            for path in MANAGEMENT:
                reply = _send(client, path, content_type, body)
                assert 400 <= reply.status_code < 500, (case_id, path, reply.text[:300])
                _assert_error_shape(reply)
        # A well-formed request still works afterwards, and only it started a runtime.
        ok = client.post("/v1/chat/completions", json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200, ok.text
    assert len(router.starts("alpha")) == 1
    assert router.proc.poll() is None
    log = router.log_path.read_text()
    assert "Traceback" not in log and "unexpected error" not in log
    assert router.metric("modelplex_requests_total", model="unknown", code="500") == 0
