"""The service's Prometheus metrics, in a registry of its own (GET /metrics)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latencies from a fraction of a millisecond (one row, a light model) to a large batch.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class Metrics:
    """Requests by route and status, rows scored and rejected, latency, batches, the model."""

    def __init__(self, model_uri: str, model_version: str, sha256: str):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "beamscore_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "beamscore_request_seconds",
            "Time from a request's arrival to its answer, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows_scored = Counter("beamscore_rows_scored", "Rows scored", registry=self.registry)
        self.rows_rejected = Counter(
            "beamscore_rows_rejected",
            "Rows rejected, by stage (validate, predict)",
            ["stage"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "beamscore_batch_rows",
            "Rows per model call (requests scored together)",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model = Gauge(
            "beamscore_model_info",
            "The model served (1), its URI, version and SHA-256 as labels",
            ["uri", "version", "sha256"],
            registry=self.registry,
        )
        self.model.labels(model_uri, model_version, sha256).set(1)
        for stage in ("validate", "predict"):
            self.rows_rejected.labels(stage)

    def text(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
