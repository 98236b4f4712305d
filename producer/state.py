"""Per-app resources, built once in the factory and stored on ``app.extensions``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import current_app
from prometheus_client import CollectorRegistry
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine

from shared import stats
from shared.constants import ENQUEUE_LATENCY_KEY
from shared.lock import Redlock
from shared.rqmodel.keys import KEYS
from shared.rqmodel.writes import JobWriter
from shared.settings import Settings

EXTENSION = "redis_archive"


@dataclass
class ArchiveState:
    """Settings and clients of one producer process."""

    settings: Settings
    redis: Redis
    cache_redis: Redis
    engine: Engine
    #: This process's enqueue latencies not yet written to Redis.
    enqueue_latency: stats.PendingHistogram = field(
        default_factory=lambda: stats.PendingHistogram(ENQUEUE_LATENCY_KEY)
    )
    queues: dict[str, Queue] = field(default_factory=dict)
    #: ``/metrics``' collector registry (set by :func:`producer.metrics.init_metrics`).
    metrics_registry: CollectorRegistry | None = None
    #: Set to stop the stats thread (:func:`producer.background.start_stats_thread`).
    stats_stop: threading.Event | None = None
    _redlock: Redlock | None = None
    _redlock_mutex: threading.Lock = field(default_factory=threading.Lock)
    #: Writes jobs in RQ's format into the queue's Redis.
    writer: JobWriter = field(init=False)

    def __post_init__(self) -> None:
        from .enqueue import job_options

        # Job options follow self.settings, which tests may replace after the factory.
        self.writer = JobWriter(self.redis, lambda name: job_options(self.settings, name), KEYS)

    def queue(self, name: str) -> Queue:
        """The RQ queue ``name`` on the queue's Redis, JSON-serialised."""
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, connection=self.redis, serializer=JSONSerializer)
            self.queues[name] = queue
        return queue

    def redlock(self) -> Redlock:
        """This process's lock over ``LOCK_REDIS_URLS``, counting statistics in the queue's Redis."""
        if self._redlock is None:
            with self._redlock_mutex:
                if self._redlock is None:
                    self._redlock = Redlock.from_settings(self.settings, stats=self.redis)
        return self._redlock

    def close(self) -> None:
        """Release pooled database and Redis connections and the lock's nodes."""
        if self.stats_stop is not None:
            self.stats_stop.set()
        self.engine.dispose()
        if self.cache_redis is not self.redis:
            self.cache_redis.close()
        self.redis.close()
        if self._redlock is not None:
            self._redlock.close()


def get_state() -> ArchiveState:
    """The state of the current app."""
    state: ArchiveState = current_app.extensions[EXTENSION]
    return state
