"""The producer's background thread: flushes enqueue latencies, samples ``INFO memory``, runs RQ's scheduler.

The scheduler share (:class:`shared.scheduler.ScheduledJobMover`) moves due retries and
``enqueue_at`` jobs back to their queues, so they run even when every worker was started
without ``--with-scheduler`` and no recovery monitor runs.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask
from redis.exceptions import RedisError

from shared import stats
from shared.scheduler import ScheduledJobMover

from .state import EXTENSION, ArchiveState

logger = logging.getLogger(__name__)

#: Seconds between flushes of the pending enqueue latencies.
FLUSH_SECONDS = 1.0


def stats_tick(state: ArchiveState, last_sample: float, now: float) -> float:
    """One round of the thread's work; returns when the last memory sample was taken."""
    try:
        state.enqueue_latency.flush(state.redis)
    except RedisError as exc:
        logger.debug("enqueue latencies kept for later: %s", exc)
    interval = state.settings.memory_sample_seconds
    if interval > 0 and now - last_sample >= interval:
        try:
            # SET NX inside: one sample per interval however many producer processes run.
            stats.record_memory_sample(state.redis, interval, now=now, keys=state.home_keys)
        except RedisError as exc:
            logger.debug("memory sample skipped: %s", exc)
        return now
    return last_sample


def _run(state: ArchiveState, stop: threading.Event) -> None:
    last_sample = 0.0
    # RQ's scheduler works under this process's RQ prefix: on a cluster, its namespace's slot
    # (each namespace's monitor moves that namespace's jobs too).
    mover = ScheduledJobMover(state.dashboard_redis, role="producer")
    try:
        while not stop.wait(FLUSH_SECONDS):
            last_sample = stats_tick(state, last_sample, time.time())
            try:
                mover.tick()
            except RedisError as exc:
                logger.debug("scheduled jobs not moved this round: %s", exc)
    finally:
        try:
            mover.close()
        except RedisError as exc:
            logger.debug("scheduler locks left to expire: %s", exc)


def start_stats_thread(app: Flask) -> threading.Event:
    """Start this process's background thread (a daemon); set the returned event to stop it."""
    state: ArchiveState = app.extensions[EXTENSION]
    stop = threading.Event()
    thread = threading.Thread(target=_run, args=(state, stop), name="archive-stats", daemon=True)
    thread.start()
    state.stats_stop = stop
    return stop
