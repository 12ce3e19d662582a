"""The Kubernetes backend's settings: ``MODELPLEX_ROUTER_KUBE_*`` (the chart sets them; docs/router.md lists them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KubeBackendSettings(BaseSettings):
    """MODELPLEX_ROUTER_KUBE_* (the chart sets them)."""

    model_config = SettingsConfigDict(env_prefix="MODELPLEX_ROUTER_KUBE_", extra="ignore")

    namespace: str = Field(default="default", description="Namespace of the MultiModels served.")
    multimodel: str = Field(
        default="", description="Serve this MultiModel only; empty = all in the namespace."
    )
    api_url: str | None = Field(
        default=None, description="Plain API URL (tests, kubectl proxy); else in-cluster."
    )
    route_to: Literal["pods", "service"] = Field(
        default="pods",
        description="pods: route each request to one of the model's ready pods (from its EndpointSlices, "
        "watched); service: to its Service (kube-proxy balances connections).",
    )
    service_urls: dict[str, str] = Field(
        default_factory=dict,
        description="API id -> base URL, overriding the Service DNS name (JSON); such a model is routed to that URL.",
    )
    endpoints_resync: float = Field(
        default=300.0, gt=0, description="Seconds between full re-lists of the EndpointSlice watch."
    )
    deployments_resync: float = Field(
        default=300.0, gt=0, description="Seconds between full re-lists of the Deployment watch."
    )
    poll_interval: float = Field(
        default=1.0, gt=0,
        description="Most seconds between readiness checks while loading (a watched change wakes one sooner).",
    )
    last_used_interval: float = Field(
        default=30.0, ge=0, description="Write the last-used annotation at most this often per model."
    )
    pod_name: str = Field(
        default="", description="This router's pod, recorded with the last use and as its lease holder identity."
    )
    lease_duration: float = Field(
        default=10.0, gt=0, description="Seconds the scaling lease and a router's load report stay valid unrenewed."
    )
    lease_renew_interval: float = Field(
        default=2.0, gt=0, description="Seconds between renewals of the scaling lease and load reports."
    )
