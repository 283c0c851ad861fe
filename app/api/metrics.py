"""``GET /metrics`` in Prometheus' text format (prometheus-client), one registry per ``Metrics``.

What is counted: the REST API's requests, errors and latency by endpoint (the route's template, never the raw path, so
ids do not make new series), each answered query's stages (decode, validate, embed, cache, search, metadata, total),
result-cache hits and misses, the rows of each inference batch (``observe_batch``, the micro-batcher's ``on_batch``),
and the catalogue's size and version, read from the index when Prometheus scrapes.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from pipeline.errors import PipelineError
from pipeline.types import MatchResult

log = logging.getLogger("app")

PREFIX = "product_matcher"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Catalogue(Collector):
    """The catalogue's size and version as gauges, read from the index at each scrape (microseconds)."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def collect(self):
        up = GaugeMetricFamily(f"{PREFIX}_catalogue_up", "1 when the vector index answers, else 0.")
        size = GaugeMetricFamily(f"{PREFIX}_catalogue_products", "Products in the vector index.")
        version = GaugeMetricFamily(f"{PREFIX}_catalogue_version", "The catalogue's version (bumped by each change).")
        try:
            size.add_metric([], self.pipe.index.count())
            version.add_metric([], self.pipe.index.info().catalog_version)
            up.add_metric([], 1)
        except PipelineError as err:
            log.debug("metrics: the index does not answer: %s", err)
            up.add_metric([], 0)
            yield up
            return
        yield from (up, size, version)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests", "REST API requests answered.", ["endpoint", "method", "status"], registry=r
        )
        self.errors = Counter(
            f"{PREFIX}_http_errors", "REST API requests answered with a 4xx or 5xx status.", ["endpoint", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            f"{PREFIX}_http_request_seconds", "REST API request latency.", ["endpoint"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.stages = Histogram(
            f"{PREFIX}_query_stage_seconds", "Time of each stage of an answered query, by the way it came in (rest: "
            "the REST API; page: the page and gradio_client).", ["via", "kind", "stage"],
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache = Counter(
            f"{PREFIX}_result_cache_lookups", "Answered queries by result-cache outcome.", ["via", "kind", "result"],
            registry=r,
        )  # fmt: skip
        self.batch_rows = Histogram(
            f"{PREFIX}_inference_batch_rows", "Rows of each inference run, by model.", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self._watched = False

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_query(self, result: MatchResult, decode_s: float | None = None, via: str = "rest") -> None:
        """One answered query: its stages (``timings_ms``, plus the API's own photo decoding) and its cache outcome."""
        kind = result.kind or "unknown"
        if decode_s is not None:
            self.stages.labels(via, kind, "decode").observe(decode_s)
        for stage, ms in result.timings_ms.items():
            self.stages.labels(via, kind, stage).observe(ms / 1000.0)
        self.cache.labels(via, kind, "hit" if result.cache_hit else "miss").inc()

    def observe_batch(self, model: str, rows: int) -> None:
        """One inference run of ``rows`` rows through ``model`` (``BatchingBackend``'s ``on_batch``)."""
        self.batch_rows.labels(model).observe(rows)

    def watch_catalogue(self, pipe) -> None:
        if not self._watched:
            self.registry.register(_Catalogue(pipe))
            self._watched = True

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The process's metrics: what the app serves at /metrics, and what the micro-batcher reports to.
METRICS = Metrics()


def observe_batch(model: str, rows: int) -> None:
    """``on_batch`` for ``pipeline.inference.batcher.BatchingBackend``: one run of ``rows`` rows through ``model``."""
    METRICS.observe_batch(model, rows)
