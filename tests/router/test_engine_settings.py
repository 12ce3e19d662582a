"""Where the router finds vLLM: ``vllm_python`` from the default, the environment and the CLI flag."""

from __future__ import annotations

import argparse
import sys

import pytest

from modelplex_router.cli_options import add_router_options, settings_from_args
from modelplex_router.server import build_backend


def _settings(argv: list[str]):
    parser = argparse.ArgumentParser()
    add_router_options(parser)
    return settings_from_args(parser.parse_args(argv))


async def test_vllm_python_default_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLEX_ROUTER_VLLM_PYTHON", raising=False)
    assert _settings([]).vllm_python == sys.executable
    monkeypatch.setenv("MODELPLEX_ROUTER_VLLM_PYTHON", "/env/vllm/bin/python")
    assert _settings([]).vllm_python == "/env/vllm/bin/python"
    settings = _settings(["--vllm-python", "/flag/vllm/bin/python"])
    assert settings.vllm_python == "/flag/vllm/bin/python"
    backend = build_backend(settings)
    try:
        assert backend.engine_command("vllm") == ["/flag/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
        assert backend.engine_command("transformers") == settings.runtime_command
    finally:
        await backend.close()
