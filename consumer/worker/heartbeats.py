"""The fast worker's liveness: a heartbeat thread that also recovers the jobs of dead workers."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis.exceptions
from rq.exceptions import StopRequested
from rq.suspension import is_suspended
from rq.utils import utcformat
from rq.worker.base import WorkerStatus

from shared.rqmodel.dates import utc_now
from shared.rqmodel.keys import Keys

from .. import recovery


class Heartbeats:
    """Beats and dead-worker scans from a background thread (mixed in before RQ's worker)."""

    # Attributes of the worker this mixin is part of.
    log: logging.Logger
    connection: Any
    name: str
    key: str
    executions_key: str
    executions: dict[str, Any]
    worker_ttl: int
    serializer: Any
    keys: Keys
    stop_requested: bool
    heartbeat_timeout: float
    beat_interval: float
    _busy_ttl: int
    _beats_stop: threading.Event

    if TYPE_CHECKING:  # RQ's BaseWorker methods this mixin calls

        def get_state(self) -> str: ...
        def set_state(self, state: str, pipeline: Any = None) -> None: ...

    def check_for_suspension(self, burst: bool) -> None:
        """Like RQ's, without a worker heartbeat (the heartbeat thread keeps the worker alive)."""
        before_state = None
        notified = False
        while not self.stop_requested and is_suspended(self.connection):
            if burst:
                self.log.info("Worker %s: suspended in burst mode, exiting", self.name)
                raise StopRequested
            if not notified:
                self.log.info("Worker %s: suspended, run `rq resume` to resume", self.name)
                before_state = self.get_state()
                self.set_state(WorkerStatus.SUSPENDED)
                notified = True
            time.sleep(1)
        if before_state:
            self.set_state(before_state)

    def _beat(self) -> None:
        ttl = max(self.worker_ttl + 60, self._busy_ttl if self.executions else 0)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.heartbeats, {self.name: time.time()})
            pipe.hset(self.key, "last_heartbeat", utcformat(utc_now()))
            pipe.expire(self.key, ttl)
            pipe.expire(self.executions_key, ttl)
            pipe.execute()

    def _beats(self) -> None:
        """Heartbeat thread: beat, and recover the jobs of workers whose beat stopped."""
        next_beat = time.monotonic() + self.beat_interval
        while not self._beats_stop.wait(min(1.0, self.beat_interval)):
            try:
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self.beat_interval
                recovery.recover_dead_workers(
                    self.connection, recovery.stale_after(self.heartbeat_timeout), serializer=self.serializer
                )
            except redis.exceptions.RedisError as exc:
                self.log.warning("Worker %s: heartbeat failed: %s", self.name, exc)

    def _unregister_beat(self) -> None:
        # Jobs still in flight (cold shutdown) stay registered so that recovery re-queues them.
        if not self.executions:
            try:
                self.connection.zrem(self.keys.heartbeats, self.name)
            except redis.exceptions.RedisError:
                self.log.warning("worker %s: could not remove its heartbeat", self.name)
