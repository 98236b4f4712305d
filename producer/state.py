"""Per-app resources, built once in the factory and stored on ``app.extensions``."""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from prometheus_client import CollectorRegistry
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine

from shared import stats
from shared.keys import KEYS, Keys
from shared.lock import Redlock
from shared.rqmodel.writes import JobWriter
from shared.settings import Settings
from shared.spaces import Space

EXTENSION = "redis_archive"


@dataclass
class ArchiveState:
    """Settings and clients of one producer process."""

    settings: Settings
    #: The queue's Redis: the only one standalone or with Sentinel; on a cluster the home slot
    #: (the project's global figures), beside one client per namespace in :attr:`spaces`.
    redis: Redis
    cache_redis: Redis
    engine: Engine
    #: Key names of the project's global figures (memory samples, lock statistics, latency).
    home_keys: Keys = KEYS
    #: The namespaces of each queue (standalone: one, the queue's Redis under RQ's prefix).
    spaces: dict[str, list[Space]] = field(default_factory=dict)
    #: The job writer of each namespace (:attr:`own_space`, and those :meth:`add_space` adds).
    writers: dict[Space, JobWriter] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    #: ``/metrics``' collector registry (set by :func:`producer.metrics.init_metrics`).
    metrics_registry: CollectorRegistry | None = None
    #: Set to stop the stats thread (:func:`producer.background.start_stats_thread`).
    stats_stop: threading.Event | None = None
    _redlock: Redlock | None = None
    _redlock_mutex: threading.Lock = field(default_factory=threading.Lock)
    #: This process's enqueue latencies not yet written to Redis.
    enqueue_latency: stats.PendingHistogram = field(init=False)
    #: The queue's Redis under this process's prefix: every queue's namespace off a cluster.
    own_space: Space = field(init=False)
    _turns: dict[str, Iterator[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.enqueue_latency = stats.PendingHistogram(self.home_keys.enqueue_latency)
        self.own_space = Space(KEYS, self.redis)
        self.writers[self.own_space] = self._new_writer(self.own_space)

    def _new_writer(self, space: Space) -> JobWriter:
        """A job writer into ``space`` with this app's job options."""
        from .enqueue import job_options

        def options(name: str) -> dict[str, Any]:
            # Job options follow self.settings, which tests may replace after the factory.
            return job_options(self.settings, name)

        return JobWriter(space.client, options, space.keys, space.keys.job_stats)

    def add_space(self, queue: str, keys: Keys, client: Redis) -> None:
        """Spread ``queue`` over one more namespace: ``keys`` in the Redis of ``client``."""
        space = Space(keys, client)
        self.writers[space] = self._new_writer(space)
        self.spaces.setdefault(queue, []).append(space)

    def spaces_of(self, queue: str) -> list[Space]:
        """The namespaces ``queue`` spreads over (standalone: the queue's Redis)."""
        return self.spaces.get(queue) or [self.own_space]

    def route(self, queue: str, routing_key: str | None = None) -> Space:
        """The namespace of the next job of ``queue``: round robin, or by ``routing_key``.

        Jobs with the same routing key always go to the same namespace, so a worker there
        sees them in the order they were enqueued.
        """
        spaces = self.spaces_of(queue)
        if len(spaces) == 1:
            return spaces[0]
        if routing_key is not None:
            return spaces[zlib.crc32(routing_key.encode()) % len(spaces)]
        turn = self._turns.get(queue)
        if turn is None:
            turn = self._turns.setdefault(queue, itertools.count())
        return spaces[next(turn) % len(spaces)]

    def all_spaces(self) -> list[Space]:
        """Every namespace of every queue, once each."""
        seen: dict[tuple[int, str], Space] = {}
        for spaces in self.spaces.values():
            for space in spaces:
                seen.setdefault((id(space.client), space.keys.rq_prefix), space)
        if not seen:
            return [self.own_space]
        return list(seen.values())

    @property
    def dashboard_redis(self) -> Redis:
        """The client RQ's own classes (rq-dashboard) read through: the namespace of RQ's prefix.

        RQ builds its keys from one prefix per process, so on a cluster rq-dashboard shows the
        namespace in this process's ``RQ_KEY_PREFIX``; elsewhere it is the queue's Redis.
        """
        for space in self.all_spaces():
            if space.keys.rq_prefix == KEYS.rq_prefix:
                return space.client
        return self.redis

    def queue(self, name: str) -> Queue:
        """The RQ queue ``name`` on the queue's Redis, JSON-serialised."""
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, connection=self.dashboard_redis, serializer=JSONSerializer)
            self.queues[name] = queue
        return queue

    def redlock(self) -> Redlock:
        """This process's lock over ``LOCK_REDIS_URLS``, counting statistics in the queue's Redis."""
        if self._redlock is None:
            with self._redlock_mutex:
                if self._redlock is None:
                    self._redlock = Redlock.from_settings(
                        self.settings, stats=self.redis, stats_keys=self.home_keys
                    )
        return self._redlock

    def close(self) -> None:
        """Release pooled database and Redis connections and the lock's nodes."""
        if self.stats_stop is not None:
            self.stats_stop.set()
        self.engine.dispose()
        if self.cache_redis is not self.redis:
            self.cache_redis.close()
        for space in self.all_spaces():
            if space.client is not self.redis:
                space.client.close()
        self.redis.close()
        if self._redlock is not None:
            self._redlock.close()


def get_state() -> ArchiveState:
    """The state of the current app."""
    state: ArchiveState = current_app.extensions[EXTENSION]
    return state
