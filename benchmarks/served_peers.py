"""The servers of the runtime-throughput comparison, started the same way for every model shape.

Each start returns the running process and the extra request fields its completions need: the
modelplex runtime and vLLM take ``ignore_eos``, so every request generates exactly ``max_tokens``;
``transformers serve`` rejects it and is credited the tokens its usage reports.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import vllm_engine
from benchmarks.processes import Proc, start_server

MODELPLEX = "modelplex runtime"
VLLM = "vLLM (CPU)"
TF_SERVE = "transformers serve"
TF_CB = "transformers serve --continuous-batching"
ALL = (MODELPLEX, VLLM, TF_CB, TF_SERVE)
SERVED_NAME = "bench"


@dataclass(frozen=True)
class ModelSetup:
    path: Path
    dtype: str  # "f32" or "bf16"
    kv_cache_gib: int  # the KV cache bound given to modelplex and vLLM alike (vLLM takes whole GiB)
    max_batch: int


def start(server: str, model: ModelSetup, extra_args: tuple[str, ...] = ()) -> tuple[Proc, dict[str, Any] | None]:
    """Start ``server`` on ``model``; (process, extra request fields: None means ``ignore_eos``)."""
    if server == MODELPLEX:
        entry = {"Plain": {"model_id": str(model.path), "dtype": model.dtype}, "alias": SERVED_NAME}
        proc = start_server(lambda port: [
            sys.executable, "-m", "modelplex_runtime", "--port", str(port), "--model-json", json.dumps(entry),
            "--max-batch-size", str(model.max_batch), "--kv-cache-gib", str(model.kv_cache_gib),
            "--log-level", "warning", *extra_args], "/ready", 600)
        return proc, None
    if server == VLLM:
        proc = start_server(lambda port: [
            vllm_engine.vllm_python(), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model.path),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", {"f32": "float32", "bf16": "bfloat16"}[model.dtype], "--max-num-seqs", str(model.max_batch),
            *extra_args], "/health", 900,
            env={"VLLM_CPU_KVCACHE_SPACE": str(model.kv_cache_gib), "VLLM_LOGGING_LEVEL": "WARNING"})
        return proc, {"model": SERVED_NAME, "ignore_eos": True}
    if server in (TF_SERVE, TF_CB):
        exe = str(Path(sys.executable).parent / "transformers")
        proc = start_server(lambda port: [
            exe, "serve", str(model.path), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
            "--dtype", {"f32": "float32", "bf16": "bfloat16"}[model.dtype], "--log-level", "warning",
            *(["--continuous-batching"] if server == TF_CB else []), *extra_args], "/health", 300)
        return proc, {"model": str(model.path)}
    raise ValueError(f"unknown server {server!r}")
