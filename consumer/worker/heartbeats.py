"""The worker's liveness: a heartbeat thread that also recovers the jobs of dead workers.

Each worker beats into a sorted set every ``HEARTBEAT_TIMEOUT / 5`` seconds (at most 3 s);
between beats it looks, once a second, for workers whose beat stopped and hands their jobs to
:mod:`consumer.recovery`. The thread waits on an event, so :meth:`Heartbeat.stop` returns at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis.exceptions
from rq.utils import utcformat

from shared.rqmodel.dates import utc_now

from .. import recovery

if TYPE_CHECKING:
    from .worker import FastWorker

logger = logging.getLogger(__name__)


class Heartbeat:
    """Beats for ``worker`` from a daemon thread, and recovers dead workers' jobs between beats."""

    def __init__(self, worker: FastWorker, timeout: float) -> None:
        self.worker = worker
        self.timeout = float(timeout)
        self.interval = min(3.0, self.timeout / 5)
        #: The longest job ttl the worker claimed: its keys must outlive the job.
        self.busy_ttl = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """One beat: the heartbeats set, the worker hash's ``last_heartbeat`` and both keys' ttls."""
        worker = self.worker
        ttl = max(worker.worker_ttl + 60, self.busy_ttl if worker.executions else 0)
        with worker.connection.pipeline(transaction=False) as pipe:
            pipe.zadd(worker.keys.heartbeats, {worker.name: time.time()})
            pipe.hset(worker.key, "last_heartbeat", utcformat(utc_now()))
            pipe.expire(worker.key, ttl)
            pipe.expire(worker.executions_key, ttl)
            pipe.execute()

    def start(self) -> None:
        """Beat now (on the calling thread, so that a refusal raises there), then from a thread."""
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.worker.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        worker = self.worker
        stale = recovery.stale_after(self.timeout)
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(min(recovery.SCAN_INTERVAL, self.interval)):
            try:
                if time.monotonic() >= next_beat:
                    self.beat()
                    next_beat = time.monotonic() + self.interval
                recovery.recover_dead_workers(
                    worker.connection, stale, serializer=worker.serializer, keys=worker.keys
                )
            except redis.exceptions.RedisError as exc:
                logger.warning("Worker %s: heartbeat failed: %s", worker.name, exc)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating; unregister unless jobs are still in flight (recovery re-queues those)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.worker.executions:
            return
        try:
            self.worker.connection.zrem(self.worker.keys.heartbeats, self.worker.name)
        except redis.exceptions.RedisError:
            logger.warning("Worker %s: could not remove its heartbeat", self.worker.name)
