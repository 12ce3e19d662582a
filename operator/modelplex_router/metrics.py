"""Prometheus metrics of one router app (own CollectorRegistry: no global state).

Every per-model series carries the model's ``engine`` (transformers, vllm) beside ``model``: callers name
the model only, and ``set_engine`` (called when a model is added or its entry changes) supplies the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelplex_router.lifecycle import ModelState, api_status

if TYPE_CHECKING:
    from modelplex_router.backend import Replicas

_STATUSES = ("loaded", "unloaded", "reloading", "failed")


class _PerModel:
    """A metric labelled ``model``, ``engine``, ...: ``labels(model=...)`` fills in the model's engine."""

    def __init__(self, metric: Any, engines: dict[str, str]) -> None:
        self.metric = metric
        self._engines = engines

    def labels(self, *, model: str, **labels: str) -> Any:
        return self.metric.labels(model=model, engine=self._engines.get(model, ""), **labels)

    def forget(self, model: str, engine: str) -> None:
        """Drop the model's series under ``engine`` (its engine changed)."""
        names = self.metric._labelnames
        seen = {
            tuple(sample.labels[name] for name in names)
            for family in self.metric.collect()
            for sample in family.samples
            if sample.labels.get("model") == model and sample.labels.get("engine") == engine
        }
        for values in seen:
            self.metric.remove(*values)


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._engines: dict[str, str] = {}
        self._per_model: list[_PerModel] = []
        self.requests_total = self._metric(
            Counter,
            "modelplex_requests_total",
            "Requests answered, by model, HTTP status code and endpoint (the API path).",
            "code",
            "endpoint",
        )
        self.request_duration = self._metric(
            Histogram,
            "modelplex_request_duration_seconds",
            "Time from request to the end of the response (load waits included), by model and endpoint.",
            "endpoint",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.model_loads_total = self._metric(
            Counter, "modelplex_model_loads_total", "Model loads, by result (success, failure, cancelled).", "result"
        )
        self.model_load_duration = self._metric(
            Histogram,
            "modelplex_model_load_duration_seconds",
            "Time from starting a runtime to it being ready.",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
        )
        self.requests_waiting = self._metric(
            Gauge, "modelplex_requests_waiting", "Requests waiting for their model to load."
        )
        self.requests_in_flight = self._metric(
            Gauge, "modelplex_requests_in_flight", "Requests being served by a runtime."
        )
        self.model_status = self._metric(
            Gauge, "modelplex_model_status", "1 for the model's current status, 0 for the others.", "status"
        )
        self.model_memory = self._metric(
            Gauge,
            "modelplex_model_memory_bytes",
            "Resident memory of the model's runtime and the processes it started (0 when unloaded).",
        )
        self.model_unloads_total = self._metric(
            Counter,
            "modelplex_model_unloads_total",
            "Model unloads, by reason (request, idle, crash, hung, external, removed).",
            "reason",
        )
        self.health_check_failures = self._metric(
            Counter,
            "modelplex_health_check_failures_total",
            "Failed health checks of loaded runtimes (no answer in time, or not 200).",
        )
        self.upstream_stalls = self._metric(
            Counter,
            "modelplex_upstream_stalls_total",
            "Requests ended because the runtime sent nothing for stall_timeout_seconds.",
        )
        self.replica_requests = self._metric(
            Gauge,
            "modelplex_replica_requests_in_flight",
            "Requests this router has outstanding on each replica of the model (what the routing policies "
            "balance); the series goes when the replica does.",
            "replica",
        )
        self.replica_failures = self._metric(
            Counter,
            "modelplex_replica_failures_total",
            "Replicas taken out of a model that stayed loaded on its other replicas, by reason (hung).",
            "reason",
        )
        self.replicas_desired = self._metric(
            Gauge, "modelplex_model_replicas_desired", "Replicas asked for (0 when unloaded)."
        )
        self.replicas_ready = self._metric(
            Gauge, "modelplex_model_replicas_ready", "Replicas ready and taking requests."
        )
        self.load_average = self._metric(
            Gauge,
            "modelplex_model_load_average",
            "Requests in flight plus waiting for the model over every router, averaged over its scaling window "
            "(the autoscaler compares it with targetRequests per replica).",
        )
        self.scaling_decisions = self._metric(
            Counter,
            "modelplex_scaling_decisions_total",
            "Replica count changes the autoscaler made, by direction (up, down).",
            "direction",
        )
        self.load_backoff = self._metric(
            Gauge,
            "modelplex_model_load_backoff_seconds",
            "Back-off in force after the model's last failed load (0 after a successful one).",
        )
        self.connections_closed = Counter(
            "modelplex_connections_closed_total",
            "Client connections the router closed: refused (over max_connections), header_timeout.",
            ["reason"],
            registry=self.registry,
        )

    def _metric(self, kind: Any, name: str, documentation: str, *labels: str, **kwargs: Any) -> _PerModel:
        metric = _PerModel(
            kind(name, documentation, ["model", "engine", *labels], registry=self.registry, **kwargs), self._engines
        )
        self._per_model.append(metric)
        return metric

    def set_engine(self, model: str, engine: str) -> None:
        """The model's engine, for the ``engine`` label of its series (a change drops the old series)."""
        old = self._engines.get(model)
        self._engines[model] = engine
        if old is not None and old != engine:
            for metric in self._per_model:
                metric.forget(model, old)

    def note_replicas(self, model: str, replicas: Replicas) -> None:
        """The model's replica counts (the autoscaler's tick keeps them current)."""
        self.replicas_desired.labels(model=model).set(replicas.desired)
        self.replicas_ready.labels(model=model).set(len(replicas.ready))

    def forget_replica(self, model: str, replica: str) -> None:
        """The replica is gone: drop its series."""
        engine = self._engines.get(model, "")
        try:
            self.replica_requests.metric.remove(model, engine, replica)
        except KeyError:
            pass

    def track_leading(self, leading: Callable[[], bool]) -> None:
        """Export whether this router makes the scaling decisions, read at scrape time."""
        gauge = Gauge(
            "modelplex_scaling_leader",
            "1 while this router holds the scaling lease and makes the autoscaler's decisions.",
            registry=self.registry,
        )
        gauge.set_function(lambda: 1.0 if leading() else 0.0)

    def track_spares(self, count: Callable[[], int]) -> None:
        """Export the number of spare runtimes waiting, read at scrape time."""
        spares = Gauge(
            "modelplex_spare_runtimes",
            "Spare runtimes started ahead (torch imported, a load rehearsed), waiting for a model.",
            registry=self.registry,
        )
        spares.set_function(count)

    def track_response_store(self, count: Callable[[], int], size: Callable[[], int]) -> None:
        """Export how many Responses API answers are kept, and their size, read at scrape time."""
        stored = Gauge(
            "modelplex_responses_stored",
            "Responses API answers kept in memory (previous_response_id, GET /v1/responses/{id}).",
            registry=self.registry,
        )
        stored.set_function(count)
        size_bytes = Gauge(
            "modelplex_responses_stored_bytes",
            "Size (bytes of JSON) of the Responses API answers kept in memory.",
            registry=self.registry,
        )
        size_bytes.set_function(size)

    def set_status(self, model: str, state: ModelState) -> None:
        current = api_status(state)
        for status in _STATUSES:
            self.model_status.labels(model=model, status=status).set(1 if status == current else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
