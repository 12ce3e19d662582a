"""API keys, scopes, limits and audit against a real ``modelplex from-config`` process (fake runtimes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

MODELS = {
    "tiny-chat": {"alias": "tiny-chat", "Plain": {"model_id": "org/tiny-chat"}},
    "tiny-slow": {"alias": "tiny-slow", "Plain": {"model_id": "org/tiny-slow"}},
    "secret-model": {"alias": "secret-model", "Plain": {"model_id": "org/secret"}},
}
TEAM_A, OPS, LIMITED, ROTATED = (f"{n}-key-0123456789abcdef" for n in ("team-a", "ops", "limited", "rotated"))
CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}


def _keys(*extra: dict) -> str:
    return json.dumps(
        {
            "keys": [
                {"name": "team-a", "key": TEAM_A, "models": ["tiny-*"]},
                {"name": "ops", "key": OPS, "manage": True},
                {
                    "name": "limited",
                    "key": LIMITED,
                    "models": ["tiny-chat"],
                    "limits": {"rpm": 2, "max_tokens": 16},
                },
                *extra,
            ],
            "model_limits": {"tiny-slow": {"concurrent": 1}},
        }
    )


@pytest.fixture
def secured(router_factory, tmp_path: Path):
    keys = tmp_path / "keys.json"
    keys.write_text(_keys())
    router = router_factory(
        MODELS,
        args=["--api-keys-file", str(keys)],
        env={
            "MODELPLEX_ROUTER_KEYS_CHECK_INTERVAL": "0.1",
            "MODELPLEX_ROUTER_MAX_BODY_BYTES": "65536",
            "MODELPLEX_ROUTER_MAX_MESSAGES": "4",
        },
        control={"tiny-slow": {"token_delay": 0.2, "tokens": 50}},
    )
    router.keys_path = keys
    return router


def _call(
    router, method: str, path: str, key: str | None = None, header: str = "bearer", **kw
) -> httpx.Response:
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"x-api-key": key}
    headers.update(kw.pop("headers", {}))
    with router.client() as c:
        return c.request(method, path, headers=headers, **kw)


def test_keys_are_required_and_checked(secured) -> None:
    for path, method in [
        ("/v1/models", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/v1/models/unload", "POST"),
    ]:
        for key in (None, "wrong-key-0123456789"):
            reply = _call(
                secured, method, path, key, json={**CHAT, "model": "tiny-chat", "model_id": "tiny-chat"}
            )
            assert reply.status_code == 401, reply.text
            assert reply.json()["error"]["code"] == "invalid_api_key"
    assert _call(secured, "GET", "/v1/models", TEAM_A, header="x-api-key").status_code == 200
    # Probes stay open but do not list the models.
    assert secured.get("/health").json() == {"status": "ok"}
    # The official client sends the key as a bearer token.
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=TEAM_A)
    assert client.chat.completions.create(model="tiny-chat", messages=CHAT["messages"]).model == "tiny-chat"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured.url}/v1", api_key="nope").models.list()
    assert TEAM_A not in secured.log_path.read_text()


def test_scopes_hide_models_and_guard_management(secured) -> None:
    listed = [m["id"] for m in _call(secured, "GET", "/v1/models", TEAM_A).json()["data"]]
    assert listed == ["default", "tiny-chat", "tiny-slow"]
    assert [m["id"] for m in _call(secured, "GET", "/v1/models", LIMITED).json()["data"]] == [
        "default",
        "tiny-chat",
    ]
    all_ids = [m["id"] for m in _call(secured, "GET", "/v1/models", OPS).json()["data"]]
    assert all_ids == ["default", "tiny-chat", "tiny-slow", "secret-model"]

    hidden = _call(secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "secret-model"})
    unknown = _call(secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "nope"})
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"]["code"] == "model_not_found"
    # The same answer as for a model that does not exist; the listed ids leave the hidden one out.
    assert hidden.text.replace("secret-model", "X") == unknown.text.replace("nope", "X")
    assert "Available models: default, tiny-chat, tiny-slow" in unknown.text
    by_path = _call(secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "org/secret"})
    assert by_path.status_code == 404
    for action in ("status", "unload", "reload"):
        reply = _call(secured, "POST", f"/v1/models/{action}", TEAM_A, json={"model_id": "secret-model"})
        assert reply.json() == {"model_id": "secret-model", "status": "not_found"}
    assert (
        _call(secured, "POST", "/v1/models/default", TEAM_A, json={"model_id": "secret-model"}).status_code
        == 404
    )
    assert not secured.starts("secret-model")

    # Visible but not manageable: 403, and the model keeps running.
    assert (
        _call(
            secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "tiny-chat"}
        ).status_code
        == 200
    )
    for action in ("unload", "reload", "default"):
        reply = _call(secured, "POST", f"/v1/models/{action}", TEAM_A, json={"model_id": "tiny-chat"})
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "permission_denied"
    assert (
        _call(secured, "POST", "/v1/models/status", TEAM_A, json={"model_id": "tiny-chat"}).json()["status"]
        == "loaded"
    )

    # A managing key may; every action is audited with the key's name, never the key.
    assert (
        _call(secured, "POST", "/v1/models/unload", OPS, json={"model_id": "tiny-chat"}).json()["status"]
        == "unloaded"
    )
    assert (
        _call(secured, "POST", "/v1/models/default", OPS, json={"model_id": "secret-model"}).status_code
        == 200
    )
    # team-a cannot see the new default: "default" disappears from its view.
    assert [m["id"] for m in _call(secured, "GET", "/v1/models", TEAM_A).json()["data"]] == [
        "tiny-chat",
        "tiny-slow",
    ]
    assert _call(secured, "POST", "/v1/chat/completions", TEAM_A, json=CHAT).status_code == 404
    audit = [json.loads(line) for line in secured.log_path.read_text().splitlines() if '"audit"' in line]
    seen = {(a["key_name"], a["action"], a["model"], a["result"]) for a in audit}
    assert ("ops", "unload", "tiny-chat", "unloaded") in seen
    assert ("ops", "set_default", "secret-model", "ok") in seen
    assert ("team-a", "unload", "tiny-chat", "denied") in seen
    assert OPS not in secured.log_path.read_text() and TEAM_A not in secured.log_path.read_text()


def test_limits_answer_429_with_retry_after_and_4xx_for_bounds(secured) -> None:
    chat = {**CHAT, "model": "tiny-chat"}
    assert (
        _call(secured, "POST", "/v1/chat/completions", LIMITED, json={**chat, "max_tokens": 17}).status_code
        == 400
    )
    too_many = _call(secured, "POST", "/v1/chat/completions", LIMITED, json={**chat, "max_tokens": 99})
    assert too_many.json()["error"]["param"] == "max_tokens"
    for _ in range(2):
        assert _call(secured, "POST", "/v1/chat/completions", LIMITED, json=chat).status_code == 200
    over = _call(secured, "POST", "/v1/chat/completions", LIMITED, json=chat)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    assert over.json()["error"]["type"] == "rate_limit_error"
    # Another key is not affected by that key's limit.
    assert _call(secured, "POST", "/v1/chat/completions", TEAM_A, json=chat).status_code == 200

    # Per-model concurrency: one stream of tiny-slow holds its only slot.
    opened = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with (
            secured.client() as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {OPS}"},
                json={**CHAT, "model": "tiny-slow", "stream": True},
            ) as stream,
        ):
            for _ in stream.iter_raw():
                opened.set()
                if release.is_set():
                    break

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(30)
        busy = _call(secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "tiny-slow"})
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1", busy.text
    finally:
        release.set()
        holder.join(30)
    secured.wait_for(
        lambda: (
            _call(
                secured, "POST", "/v1/chat/completions", TEAM_A, json={**CHAT, "model": "tiny-slow"}
            ).status_code
            == 200
        ),
        what="the slot to come back",
    )

    big = _call(
        secured,
        "POST",
        "/v1/chat/completions",
        TEAM_A,
        content=b"{" + b" " * 70000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    many = _call(
        secured,
        "POST",
        "/v1/chat/completions",
        TEAM_A,
        json={"model": "tiny-chat", "messages": CHAT["messages"] * 5},
    )
    assert many.status_code == 400 and many.json()["error"]["param"] == "messages"
    assert "5 messages" in many.json()["error"]["message"]


def test_rotating_the_keys_file_needs_no_restart(secured) -> None:
    assert _call(secured, "GET", "/v1/models", TEAM_A).status_code == 200
    new = secured.keys_path.with_name("keys.new")
    new.write_text(json.dumps({"keys": [{"name": "rotated", "key": ROTATED, "models": ["tiny-chat"]}]}))
    new.replace(secured.keys_path)  # as kubelet swaps a Secret's files: one atomic rename
    secured.wait_for(
        lambda: _call(secured, "GET", "/v1/models", TEAM_A).status_code == 401, what="old key refused"
    )
    assert [m["id"] for m in _call(secured, "GET", "/v1/models", ROTATED).json()["data"]] == [
        "default",
        "tiny-chat",
    ]
    # A broken edit keeps the keys in force.
    secured.keys_path.write_text("{ not json")
    # (The file is checked on requests, at most every keys_check_interval.)
    secured.wait_for(
        lambda: (
            _call(secured, "GET", "/v1/models", ROTATED).status_code == 200
            and "keys file not reloaded" in secured.log_path.read_text()
        ),
        what="reload error",
    )


def test_open_router_warns_and_required_keys_refuse_to_start(router_factory, tmp_path: Path) -> None:
    router = router_factory({"tiny-chat": MODELS["tiny-chat"]})
    assert "NO API KEYS CONFIGURED" in router.log_path.read_text()
    assert router.post("/v1/chat/completions", CHAT).status_code == 200
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"tiny-chat": MODELS["tiny-chat"]}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplex",
            "from-config",
            "--file",
            str(config),
            "--require-api-keys",
            "-p",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "API keys are required" in result.stderr
    # With only the admin key from the environment, keys are configured.
    admin = router_factory(
        {"tiny-chat": MODELS["tiny-chat"]},
        args=["--require-api-keys"],
        env={"MODELPLEX_ROUTER_API_KEY": "admin-key-0123456789"},
    )
    assert admin.post("/v1/chat/completions", CHAT).status_code == 401
    with admin.client(headers={"Authorization": "Bearer admin-key-0123456789"}) as c:
        assert c.post("/v1/models/unload", json={"model_id": "tiny-chat"}).status_code == 200
