"""Runtime test fixtures: one real runtime process per module where possible."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.runtime_process import RuntimeProcess, start_runtime


@pytest.fixture(scope="module")
def llama_runtime(tiny_llama_dir: Path) -> Iterator[RuntimeProcess]:
    entry = {"Plain": {"model_id": str(tiny_llama_dir)}, "alias": "tiny-chat"}
    with start_runtime(entry, extra_args=["--max-body-bytes", "65536", "--max-batch-size", "8"]) as rt:
        yield rt


@pytest.fixture(scope="module")
def minilm_runtime(minilm_dir: Path) -> Iterator[RuntimeProcess]:
    with start_runtime({"Embedding": {"model_id": str(minilm_dir)}, "alias": "minilm"}) as rt:
        yield rt


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelplex_runtime.engine.tiny import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
