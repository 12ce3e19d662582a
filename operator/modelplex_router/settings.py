"""The router's settings (environment variables prefixed ``MODELPLEX_ROUTER_``, or CLI flags)."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_runtime_command() -> list[str]:
    return [sys.executable, "-m", "modelplex_runtime"]


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLEX_ROUTER_", extra="ignore")

    config_file: str | None = Field(default=None, description="JSON or TOML multi-model config file.")
    default_model_id: str | None = Field(
        default=None, description="Default model (alias or pipeline name); the first model when unset."
    )
    host: str = Field(default="127.0.0.1", description="Address the router listens on.")
    port: int = Field(default=1234, ge=0, le=65535, description="Port the router listens on.")
    backend: Literal["local", "kubernetes"] = Field(
        default="local", description="local: each runtime is a process here; kubernetes: a Deployment each."
    )
    runtime_command: list[str] = Field(
        default_factory=_default_runtime_command,
        description="Command starting one runtime (local backend); the router appends its flags.",
    )
    vllm_python: str = Field(
        default_factory=lambda: sys.executable,
        description="Local backend: the Python interpreter that runs vLLM-engine models "
        "(`<vllm_python> -m vllm.entrypoints.openai.api_server`), usually the one of vLLM's own virtualenv; "
        "default the router's own.",
    )
    runtime_host: str = Field(default="127.0.0.1", description="Address local runtimes bind to.")
    spare_runtimes: int = Field(
        default=1,
        ge=0,
        le=8,
        description="Local backend: runtimes started ahead with torch imported and a load rehearsed, each "
        "handed the next model that loads (a cold start then costs little beyond the weights); 0 = off. "
        "Each waiting spare holds about 400 MiB.",
    )
    max_wait_seconds: float = Field(
        default=300.0, gt=0, description="How long a request waits for its model to load before a 503."
    )
    max_waiting_per_model: int = Field(
        default=256, ge=1, description="Requests allowed to wait for one model's load; more get 429."
    )
    load_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="A load taking longer than this fails (and the runtime is stopped)."
    )
    drain_grace_seconds: float = Field(
        default=30.0, ge=0, description="How long an unload waits for in-flight requests before cutting them."
    )
    stop_grace_seconds: float = Field(
        default=10.0, ge=0, description="How long a runtime may take to exit after SIGTERM before SIGKILL."
    )
    loading_comment_interval: float = Field(
        default=2.0, gt=0, description="Seconds between ': loading' SSE comments sent to held streams."
    )
    retry_after_seconds: int = Field(
        default=10, ge=1, description="Retry-After sent with 503 on a load wait."
    )
    stall_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A runtime that sends no byte for this long (no answer yet, or nothing more of a stream) "
        "ends the request: 504, or an error event on a stream. Waiting for a model to load is not a stall.",
    )
    health_check_interval_seconds: float = Field(
        default=5.0, ge=0, description="Seconds between GET /health checks of each loaded model; 0 = none."
    )
    health_check_timeout_seconds: float = Field(
        default=5.0, gt=0, description="A health check without an answer this long failed."
    )
    health_check_failures: int = Field(
        default=3,
        ge=1,
        description="Failed health checks in a row (with no byte from the runtime meanwhile) that declare a "
        "runtime hung: its requests get 503, it is ended, the next request loads the model again.",
    )
    load_backoff_initial_seconds: float = Field(
        default=2.0,
        ge=0,
        description="After a failed load, requests fail at once (503 + Retry-After) for this long before "
        "the next automatic load; doubled after each further failure in a row. 0 = no back-off.",
    )
    load_backoff_max_seconds: float = Field(
        default=300.0, ge=0, description="The longest back-off after failed loads."
    )
    monitor_interval: float = Field(
        default=1.0, gt=0, description="Seconds between checks for idle models and runtimes that died."
    )
    autoscaler: bool = Field(
        default=True,
        description="The built-in autoscaler: replicas between a model's minReplicas and maxReplicas by load. "
        "Off when another autoscaler (KEDA, an HPA) scales the models' Deployments; loads on the first request "
        "and idle unloads stay the router's either way.",
    )
    scale_interval_seconds: float = Field(
        default=1.0, gt=0, description="Seconds between the autoscaler's load samples and decisions."
    )
    gpus: list[str] | None = Field(
        default=None,
        description="Local backend: GPU ids the replicas of a model with maxReplicas > 1 are spread over, one "
        "slot each through CUDA_VISIBLE_DEVICES (JSON list); unset = CUDA_VISIBLE_DEVICES, else nvidia-smi's "
        "list, else none.",
    )
    split_cpus: bool = Field(
        default=True,
        description="Local backend without GPUs: each replica slot of a model with maxReplicas > 1 runs on its own "
        "share of the router's CPU cores (process affinity), so two engines do not fight over the same cores; "
        "false = every replica may use every core.",
    )
    catalog_refresh_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Kubernetes: seconds between re-reads of the MultiModels (added, removed, changed "
        "models); 0 = read once at start.",
    )
    api_keys_file: str | None = Field(
        default=None,
        description="JSON keys file (a mounted Secret on a cluster), re-read when it changes; see docs/security.md.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="One extra key named 'admin' that may use and manage every model."
    )
    require_api_keys: bool = Field(
        default=False, description="Refuse to start without keys (instead of serving openly with a warning)."
    )
    keys_check_interval: float = Field(
        default=1.0, gt=0, description="Seconds between checks of the keys file for changes."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Larger bodies get 413. The one body limit: local runtimes get the same value, and the "
        "runtime's own default matches it.",
    )
    max_messages: int = Field(default=1024, ge=1, description="More chat messages in a request get 400.")
    max_images: int = Field(default=16, ge=0, description="More image parts in a request get 400.")
    max_input_chars: int = Field(
        default=2_000_000, ge=1, description="More characters of text input in a request get 400."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        ge=0,
        description="A client's request headers must be complete this long after its connection opened "
        "(or its previous response ended), or the connection is closed (408); 0 = no bound.",
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, description="A request body not received in full within this long gets 408."
    )
    keep_alive_timeout_seconds: float = Field(
        default=5.0, gt=0, description="An idle kept-alive client connection is closed after this long."
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Client connections open at once; one more gets 503 + Retry-After and is closed. Requests "
        "held for a model load count, so keep it above max_waiting_per_model x models.",
    )
    responses_store_size: int = Field(
        default=1000,
        ge=0,
        description="Responses API: how many answers are kept (in memory, for previous_response_id and "
        "GET /v1/responses/{id}); 0 keeps none. Lost on restart, not shared between replicas.",
    )
    responses_store_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Responses API: the most memory (bytes of JSON) the kept answers may take; the oldest go first.",
    )
    responses_store_ttl_seconds: float = Field(
        default=3600.0, gt=0, description="Responses API: how long an answer is kept."
    )
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_max_connections: int = Field(default=1000, ge=1)
    upstream_lanes: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Independent connection pools to the runtimes, used in turn: httpx scans a whole pool on "
        "every request, so several small pools cost less per request than one big one.",
    )
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="One JSON object per log line.")
