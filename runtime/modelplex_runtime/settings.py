"""Runtime settings: one pydantic-settings class, filled from flags (in __main__) or MODELPLEX_RUNTIME_* env vars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelplex_spec import ModelEntry


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELPLEX_RUNTIME_", extra="ignore", protected_namespaces=()
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    model_json: str | None = Field(default=None, description="One model entry as JSON.")
    model_file: str | None = Field(default=None, description="Path to a JSON file holding one model entry.")
    served_model_name: str | None = Field(
        default=None, description="The model id served; defaults to the api_id."
    )
    device: str = Field(default="auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    max_batch_size: int = Field(default=32, ge=1, description="Most sequences decoded together.")
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch threads on CPU; default: measured per step size, all cores or all but one (kept for HTTP).",
    )
    kv_cache_gib: float | None = Field(
        default=None,
        gt=0,
        description="Most memory the KV cache of the running batch may take, in GiB; default: a quarter of the "
        "host's memory (at most 8 GiB) on CPU, half the memory left after the weights on CUDA.",
    )
    max_step_tokens: int = Field(
        default=512,
        ge=16,
        description="Most tokens one batch step feeds the model: a token per decoding sequence plus chunks of "
        "the prompts being prefilled.",
    )
    batch_path: Literal["auto", "padded"] = Field(
        default="auto",
        description="auto: the packed batch path when the model's attention can run it, else padded; padded: "
        "always the padded path (left-padded batches over transformers' DynamicCache).",
    )
    cpu_linear: Literal["onednn", "torch"] = Field(
        default="onednn",
        description="Linear layers of an f32 or bf16 text model on CPU: onednn also keeps each weight reordered for "
        "oneDNN and uses it for steps of 2 tokens or more in f32, every step in bf16 where the CPU runs it natively "
        "(faster batches, a second copy of those weights in memory); "
        "torch: torch's own (MKL) kernels only.",
    )
    stream_interval_ms: float = Field(
        default=20.0,
        ge=0,
        le=1000,
        description="A streamed response sends its tokens at most this often (the first token and the finish at "
        "once): fewer, larger chunks leave more CPU to the model. 0 sends each token as it is generated.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Larger request bodies get 413. The same default as the router's max_body_bytes (the router "
        "enforces it first and passes its own value to the runtimes it starts).",
    )
    max_waiting_requests: int = Field(
        default=1024,
        ge=0,
        description="Sequences held beyond the running batch (--max-batch-size); past it requests get 429 with "
        "Retry-After. Keep it above the router's max_waiting_per_model (256), which it releases at once on load.",
    )
    embedding_timeout_seconds: float = Field(
        default=300.0, gt=0, description="How long an embedding request waits for its vectors before a 504."
    )
    engine_stall_seconds: float = Field(
        default=120.0,
        gt=0,
        description="An engine thread busy this long without progress makes /health (the liveness probe) 503.",
    )
    allow_remote_images: bool = Field(
        default=False, description="Fetch http(s) image_url parts (off: data: URLs only)."
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    spare: bool = Field(
        default=False,
        description="Start as a spare: import torch, rehearse a load, then read the model (one JSON line) on stdin.",
    )

    def load_entry(self) -> ModelEntry:
        """The model entry from model_json or model_file; ValueError with a readable reason."""
        if self.model_json and self.model_file:
            raise ValueError("give either --model-json or --model-file, not both")
        if self.model_file:
            try:
                raw = Path(self.model_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"cannot read model file {self.model_file!r}: {exc.strerror or exc}"
                ) from exc
        elif self.model_json:
            raw = self.model_json
        else:
            raise ValueError(
                "no model given: pass --model-json, --model-file or MODELPLEX_RUNTIME_MODEL_JSON"
            )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the model entry is not valid JSON: {exc}") from exc
        return ModelEntry.model_validate(data)

    def served_name(self, entry: ModelEntry) -> str:
        return self.served_model_name or entry.api_id
