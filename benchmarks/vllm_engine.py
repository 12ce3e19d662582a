"""vLLM's CPU build for the benchmarks: its venv (``.ci/vllm-venv.sh``), the settings it needs here, a model
of a shape its CPU attention supports, and a config entry running that model on vLLM through the router."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_ENV = "MODELPLEX_BENCH_VLLM_PYTHON"
# A 1 GiB KV cache per vLLM server; the router's children inherit it.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# What the tests use too: a small memory share, and no torch.compile warm-up (measured on its own).
ENGINE_ARGS = ["--gpu-memory-utilization", "0.1", "--enforce-eager"]


@cache
def vllm_python() -> str:
    """$MODELPLEX_BENCH_VLLM_PYTHON, else the venv of ``.ci/vllm-venv.sh`` (created on first use, ~2 min)."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    done = subprocess.run(["bash", str(ROOT / ".ci" / "vllm-venv.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f".ci/vllm-venv.sh failed: {done.stderr[-2000:]}")
    return str(ROOT / done.stdout.strip().splitlines()[-1])


def make_model(out_dir: Path) -> Path:
    """A random Llama with head size 64 (hidden 256, 4 heads, 2 layers): vLLM's CPU attention has kernels for it."""
    from modelplex_runtime.engine.tiny import make_tiny_llama

    return make_tiny_llama(out_dir, hidden_size=256, num_heads=4, num_layers=2, max_position_embeddings=1024)


def entry(model_dir: Path, alias: str, engine_args: list[str] | None = None, **extra: object) -> dict[str, object]:
    """A config entry serving ``model_dir`` on vLLM under ``alias``."""
    return {"Plain": {"model_id": str(model_dir), "max_seq_len": 512}, "alias": alias, "engine": "vllm",
            "engine_args": ENGINE_ARGS if engine_args is None else engine_args, **extra}
