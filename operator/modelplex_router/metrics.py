"""Prometheus metrics of one router app (own CollectorRegistry: no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelplex_router.lifecycle import ModelState, api_status

_STATUSES = ("loaded", "unloaded", "reloading", "failed")


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "modelplex_requests_total",
            "Requests answered, by model and HTTP status code.",
            ["model", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "modelplex_request_duration_seconds",
            "Time from request to the end of the response (load waits included).",
            ["model"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.model_loads_total = Counter(
            "modelplex_model_loads_total",
            "Model loads, by result (success, failure, cancelled).",
            ["model", "result"],
            registry=r,
        )
        self.model_load_duration = Histogram(
            "modelplex_model_load_duration_seconds",
            "Time from starting a runtime to it being ready.",
            ["model"],
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.requests_waiting = Gauge(
            "modelplex_requests_waiting", "Requests waiting for their model to load.", ["model"], registry=r
        )
        self.requests_in_flight = Gauge(
            "modelplex_requests_in_flight", "Requests being served by a runtime.", ["model"], registry=r
        )
        self.model_status = Gauge(
            "modelplex_model_status",
            "1 for the model's current status, 0 for the others.",
            ["model", "status"],
            registry=r,
        )
        self.model_memory = Gauge(
            "modelplex_model_memory_bytes",
            "Resident memory of the model's runtime (0 when unloaded).",
            ["model"],
            registry=r,
        )
        self.model_unloads_total = Counter(
            "modelplex_model_unloads_total",
            "Model unloads, by reason (request, idle, crash, hung, external, removed).",
            ["model", "reason"],
            registry=r,
        )

        self.health_check_failures = Counter(
            "modelplex_health_check_failures_total",
            "Failed health checks of loaded runtimes (no answer in time, or not 200).",
            ["model"],
            registry=r,
        )
        self.upstream_stalls = Counter(
            "modelplex_upstream_stalls_total",
            "Requests ended because the runtime sent nothing for stall_timeout_seconds.",
            ["model"],
            registry=r,
        )
        self.load_backoff = Gauge(
            "modelplex_model_load_backoff_seconds",
            "Back-off in force after the model's last failed load (0 after a successful one).",
            ["model"],
            registry=r,
        )

    def track_spares(self, count: Callable[[], int]) -> None:
        """Export the number of spare runtimes waiting, read at scrape time."""
        spares = Gauge(
            "modelplex_spare_runtimes",
            "Spare runtimes started ahead (torch imported, a load rehearsed), waiting for a model.",
            registry=self.registry,
        )
        spares.set_function(count)

    def set_status(self, model: str, state: ModelState) -> None:
        current = api_status(state)
        for status in _STATUSES:
            self.model_status.labels(model=model, status=status).set(1 if status == current else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
