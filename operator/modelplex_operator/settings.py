"""The operator's settings (environment variables MODELPLEX_OPERATOR_*), built once in __main__."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLEX_OPERATOR_", extra="ignore")

    namespaces: str = Field(default="", description="Comma-separated namespaces to watch; empty = cluster-wide.")
    runtime_image: str = Field(default="ghcr.io/modelplex/runtime:0.1.0", description="Default runtime image.")
    runtime_image_pull_policy: str = "IfNotPresent"
    vllm_image: str = Field(
        default="vllm/vllm-openai:v0.32.0", description="Default image of engine: vllm models (vLLM's OpenAI server)."
    )
    vllm_image_pull_policy: str = "IfNotPresent"
    runtime_service_account: str | None = Field(default=None, description="ServiceAccount of runtime pods.")
    kube_api_url: str | None = Field(
        default=None, description="Talk to this API URL without auth (tests, kubectl proxy); else in-cluster/kubeconfig."
    )
    resync_seconds: float = Field(default=60.0, gt=0, description="Periodic re-reconcile of every MultiModel.")
    liveness_port: int = 8080
    log_format: str = Field(default="json", description="json or text.")
    log_level: str = "INFO"

    def namespace_list(self) -> list[str]:
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]
