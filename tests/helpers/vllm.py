"""vLLM's CPU build for tests: the interpreter of the venv that ``.ci/vllm-venv.sh`` creates (or finds)."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from modelplex_runtime.engine.tiny import make_tiny_llama

REPO = Path(__file__).resolve().parents[2]
# Settings vLLM's CPU build needs here: a 1 GiB KV cache, and a head size its CPU attention supports.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# --enforce-eager skips the torch.compile warm-up (about 40 s on 2 cores with a cold compile cache).
CPU_ENGINE_ARGS = ["--gpu-memory-utilization", "0.1", "--enforce-eager"]


@cache
def vllm_python() -> str:
    """The vLLM venv's python (``bash .ci/vllm-venv.sh``: creates the venv the first time, ~2 min)."""
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "vllm-venv.sh")], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f".ci/vllm-venv.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    # Not resolve(): the venv is found through the path of its own python, not the one it links to.
    return str(REPO / done.stdout.strip().splitlines()[-1])


def make_vllm_llama(out_dir: Path) -> Path:
    """A random-weight Llama of a shape vLLM's CPU attention supports (head size 64)."""
    return make_tiny_llama(out_dir, hidden_size=256, num_heads=4, max_position_embeddings=1024)
