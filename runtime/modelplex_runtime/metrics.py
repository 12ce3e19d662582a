"""Prometheus metrics on a per-app registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelplex_runtime.engine_api import BatchStats

_P = "modelplex_runtime_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(_P + "requests", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=r)
        self.prompt_tokens = Counter(_P + "prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter(_P + "generation_tokens", "Tokens generated", registry=r)
        self.cancelled = Counter(_P + "cancelled_requests", "Generations stopped early (client gone)", registry=r)
        self.embedding_inputs = Counter(_P + "embedding_inputs", "Texts embedded", registry=r)
        self.ttft = Histogram(_P + "time_to_first_token_seconds", "Request arrival to first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram(_P + "time_per_output_token_seconds", "Mean time per token after the first", buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram(_P + "request_duration_seconds", "Generation request duration", buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(_P + "batch_size", "Sequences per batch step", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue_depth = Gauge(_P + "queue_depth", "Requests waiting to join the batch", registry=r)
        self.running = Gauge(_P + "running_requests", "Sequences in the running batch", registry=r)
        self.load_seconds = Gauge(_P + "model_load_seconds", "Seconds spent loading the model", registry=r)
        self.ready = Gauge(_P + "ready", "1 once the model is loaded", registry=r)

    def track_engine(self, queue_depth: Callable[[], int], running: Callable[[], int],
                     batch_stats: Callable[[], BatchStats | None]) -> None:
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.running.set_function(lambda: float(running()))
        self.registry.register(_BatchCollector(batch_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BatchCollector(Collector):
    """The text batcher's KV cache, read at each scrape."""

    def __init__(self, stats: Callable[[], BatchStats | None]) -> None:
        self._stats = stats

    def collect(self):  # type: ignore[no-untyped-def]
        s = self._stats()
        if s is None:
            return
        yield GaugeMetricFamily(_P + "kv_cache_bytes", "Bytes the batch's KV cache holds allocated", value=s.kv_cache_bytes)
        if s.kv_cache_budget_bytes is not None:
            yield GaugeMetricFamily(_P + "kv_cache_budget_bytes", "Most bytes the KV cache may take (--kv-cache-gib)",
                                    value=s.kv_cache_budget_bytes)
        yield GaugeMetricFamily(_P + "kv_cache_tokens", "Tokens the running sequences hold in the KV cache",
                                value=s.kv_cache_tokens)
        yield CounterMetricFamily(_P + "preempted_sequences", "Sequences preempted (recomputed later) to stay within "
                                  "the KV cache budget", value=s.preemptions)
