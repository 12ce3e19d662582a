"""The peers the benchmarks compare against, each in a virtualenv of its own, set up when missing.

- LiteLLM proxy and vllm-router: ``.venv-peers`` in the repository root (``litellm[proxy]`` pins
  ``huggingface_hub<2`` and ``rich<14``, which would downgrade both in the runtime's environment).
- vLLM's CPU build: the venv of ``.ci/vllm-venv.sh`` (it pins its own transformers and torch), found or
  made by ``vllm_engine.vllm_python``.

``MODELPLEX_BENCH_PEER_BIN`` (a folder holding ``litellm`` and ``vllm-router``) and
``MODELPLEX_BENCH_VLLM_PYTHON`` (a Python with vLLM) point at existing installs instead. A first run
on a fresh machine spends a few minutes installing; later runs find the venvs ready.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from benchmarks import vllm_engine
from benchmarks.processes import DEFAULT_PEER_BIN, PEER_BIN_ENV

ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV = DEFAULT_PEER_BIN.parent
# Pinned: the peers' figures are only comparable between runs of the same versions.
PEER_PACKAGES = ("litellm[proxy]==1.106.12", "vllm-router==0.1.17")  # the newest litellm whose [proxy] extra resolves on PyPI
INSTALL_TIMEOUT = 1800


@contextmanager
def _install_lock(name: str) -> Iterator[None]:
    """One install at a time per venv, across processes (parallel benchmark runs, tests)."""
    ROOT.joinpath(".venv-locks").mkdir(exist_ok=True)
    with open(ROOT / ".venv-locks" / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed: {(done.stderr or done.stdout)[-1500:]}")


@cache
def peers_bin() -> Path:
    """The folder with ``litellm`` and ``vllm-router``: $MODELPLEX_BENCH_PEER_BIN, else ``.venv-peers/bin``,
    created and filled on first use."""
    if os.environ.get(PEER_BIN_ENV):
        return Path(os.environ[PEER_BIN_ENV])
    bin_dir = PEERS_VENV / "bin"
    with _install_lock("peers"):
        if not all((bin_dir / tool).exists() for tool in ("litellm", "vllm-router")):
            print(f"[benchmarks] installing the peers into {PEERS_VENV} ({', '.join(PEER_PACKAGES)}) ...",
                  file=sys.stderr, flush=True)
            if not (bin_dir / "python").exists():
                _run([sys.executable, "-m", "venv", str(PEERS_VENV)])
            _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *PEER_PACKAGES])
    return bin_dir


def prepare(comparisons: list[str]) -> None:
    """Set up the peers' venvs that ``comparisons`` need, before any measurement (an install would steal
    the CPU from one). A failed install is reported here and again, with its error, in the section."""
    steps = []
    if "routing" in comparisons:
        steps.append(("LiteLLM and vllm-router", peers_bin))
    if {"routing", "throughput", "engines"} & set(comparisons):
        steps.append(("vLLM (CPU)", vllm_engine.vllm_python))
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            print(f"[benchmarks] {name} unavailable: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
