"""The gateway's Prometheus metrics, on ``GET /metrics`` (a registry of its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "llm_gateway_requests_total",
    "Requests answered, by endpoint and status",
    ["endpoint", "status"],
    registry=REGISTRY,
)
SECONDS = Histogram(
    "llm_gateway_request_seconds",
    "Time to the answer (to the first byte for streams), by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
REFUSED = Counter(
    "llm_gateway_backpressure_total",
    "Requests refused with 429 because they would wait too long, by limit group",
    ["group"],
    registry=REGISTRY,
)
STREAMS = Gauge("llm_gateway_streams", "Streams being relayed now", registry=REGISTRY)


def exposition() -> bytes:
    return bytes(generate_latest(REGISTRY))
