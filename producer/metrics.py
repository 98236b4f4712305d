"""``GET /metrics``: Prometheus text, read from Redis at scrape time.

Counters and histograms live in Redis (:mod:`shared.stats`), written by the producer's enqueue
path and the workers' callbacks, so every process that serves the app answers with the same
totals and no prometheus multiprocess directory is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from shared import stats
from shared.spaces import Space

from .openapi import TextResponse, operation
from .state import EXTENSION, ArchiveState, get_state

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)


JOB_EVENT_DOCS = {
    "enqueued": "Jobs written to a queue by the producer",
    "finished": "Jobs that finished successfully",
    "failed": "Jobs that failed their last attempt",
    "retried": "Failed attempts that were scheduled for another attempt",
}
#: Histograms kept per namespace, by their key's name in :class:`shared.keys.Keys`.
HISTOGRAM_DOCS = {
    "duration": ("archive_job_duration_seconds", "Time a job ran, from start to end (every attempt)"),
    "wait": ("archive_job_wait_seconds", "Time a job waited in its queue before it started"),
}
ENQUEUE_LATENCY_DOC = (
    "archive_enqueue_latency_seconds",
    "Time the producer took to write jobs to Redis, per write (a bulk enqueue is one)",
)
MEMORY_GAUGES = {
    "used_memory": ("archive_redis_used_memory_bytes", "Redis used_memory"),
    "used_memory_peak": ("archive_redis_used_memory_peak_bytes", "Redis used_memory_peak"),
    "used_memory_rss": ("archive_redis_used_memory_rss_bytes", "Redis used_memory_rss"),
    "maxmemory": ("archive_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)"),
    "mem_fragmentation_ratio": ("archive_redis_mem_fragmentation_ratio", "Redis mem_fragmentation_ratio"),
}


class ArchiveCollector(Collector):
    """Queue depths, job counters, histograms, memory and lock figures, read on every scrape."""

    def __init__(self, state: ArchiveState) -> None:
        self.state = state
        self.conn: Redis = state.redis

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("archive_redis_up", "1 when the queue's Redis answered this scrape")
        try:
            metrics = list(self._collect())
        except RedisError as exc:
            logger.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "archive_queue_jobs", "Jobs in each queue (queued) and registry", labels=["queue", "registry"]
        )
        spaces = self.state.all_spaces()
        home = Space(self.state.home_keys, self.conn)
        for queue, counts in stats.depths_of(spaces).items():
            for registry, count in counts.items():
                depth.add_metric([queue, registry], count)
        yield depth

        counters = stats.counters_of(spaces)
        for event in stats.JOB_EVENTS:
            family = CounterMetricFamily(f"archive_jobs_{event}", JOB_EVENT_DOCS[event], labels=["queue"])
            for queue, counts in sorted(counters.items()):
                family.add_metric([queue], counts.get(event, 0))
            yield family

        figures = {kind: stats.histograms_of(spaces, kind) for kind in HISTOGRAM_DOCS}
        docs = dict(HISTOGRAM_DOCS)
        figures["enqueue_latency"] = stats.histograms(self.conn, self.state.home_keys.enqueue_latency)
        docs["enqueue_latency"] = ENQUEUE_LATENCY_DOC
        for kind, (name, doc) in docs.items():
            histogram = HistogramMetricFamily(name, doc, labels=["queue"])
            for queue, h in sorted(figures[kind].items()):
                histogram.add_metric(
                    [queue], [(_le(bound), count) for bound, count in h.buckets], sum_value=h.total
                )
            yield histogram

        info = self.conn.info("memory")
        for field, (name, doc) in MEMORY_GAUGES.items():
            yield GaugeMetricFamily(name, doc, value=float(info.get(field, 0)))

        lock_spaces = [home, *(s for s in spaces if s.keys != home.keys)]
        for event, count in stats.lock_stats_of(lock_spaces).items():
            yield CounterMetricFamily(f"archive_lock_{event}", f"Distributed lock: {event}", value=count)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def init_metrics(app: Flask) -> None:
    """Give ``app`` its own collector registry and the ``/metrics`` route."""
    state: ArchiveState = app.extensions[EXTENSION]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchiveCollector(state))
    state.metrics_registry = registry
    app.register_blueprint(bp)


@bp.get("/metrics")
@operation(
    "Prometheus metrics: queue depths, job counters and histograms, Redis memory, lock figures",
    responses={200: TextResponse("Prometheus text exposition format", "text/plain")},
    tags=("metrics",),
)
def metrics() -> Response:
    state = get_state()
    try:
        # This process's own enqueue latencies first; other processes flush theirs every second.
        state.enqueue_latency.flush(state.redis)
    except RedisError as exc:
        logger.debug("enqueue latencies kept for later: %s", exc)
    registry = state.metrics_registry
    assert registry is not None
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)
