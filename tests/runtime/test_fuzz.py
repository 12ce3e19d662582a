"""schemathesis against a real runtime's OpenAPI schema (tiny Llama): no 5xx, no crash."""

from __future__ import annotations

from pathlib import Path

from helpers.fuzz import run_schemathesis


def test_fuzzing_the_runtime_finds_no_server_error(llama_runtime, tmp_path: Path) -> None:
    run_schemathesis(llama_runtime.url, max_examples=8, workdir=tmp_path)
    assert llama_runtime.proc.poll() is None
    assert "Traceback" not in llama_runtime.logs()
