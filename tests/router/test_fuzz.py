"""schemathesis against the router's OpenAPI schema (with keys, fake runtimes): no 5xx, no crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.fuzz import run_schemathesis

pytestmark = pytest.mark.integration

KEY = "fuzz-admin-key-0123456789"
MODELS = {
    "tiny-chat": {"alias": "tiny-chat", "Plain": {"model_id": "org/tiny-chat"}},
    "embed": {"alias": "minilm", "Embedding": {"model_id": "org/minilm"}},
}


@pytest.mark.parametrize("with_key", [True, False], ids=["authorized", "no-key"])
def test_fuzzing_the_router_finds_no_server_error(router_factory, tmp_path: Path, with_key: bool) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "fuzz", "key": KEY, "manage": True}]}))
    router = router_factory(MODELS, args=["--api-keys-file", str(keys)])
    headers = {"Authorization": f"Bearer {KEY}"} if with_key else None
    run_schemathesis(router.url, max_examples=15, workdir=tmp_path, headers=headers)
    assert router.proc.poll() is None
    assert router.get("/health").status_code == 200
    assert "Traceback" not in router.log_path.read_text()
