"""The producer's background thread: flushes enqueue latencies, samples ``INFO memory``, runs RQ's scheduler.

The scheduler share (:class:`shared.scheduler.ScheduledJobMover`) moves due retries and
``enqueue_at`` jobs back to their queues, so they run even when every worker was started
without ``--with-scheduler`` and no recovery monitor runs. A guarantee must not depend on
which server runs the app, so every process that serves the app runs the thread: each
process starts it with its first request (:func:`init_background`), whatever WSGI server
(gunicorn, ``flask run``, granian) built the app and however it forked.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from flask import Flask
from redis.exceptions import RedisError

from shared import stats
from shared.scheduler import ScheduledJobMover

from .flask_app import direct_twin
from .state import EXTENSION, ArchiveState

logger = logging.getLogger(__name__)

#: Seconds between flushes of the pending enqueue latencies.
FLUSH_SECONDS = 1.0
#: Seconds a stop waits for the thread's last round, which hands the scheduler locks over.
STOP_SECONDS = 3.0
#: ``app.config`` key: start the thread with each process's first request (default: on,
#: off for apps built with ``TESTING``, which start it themselves when a test needs it).
CONFIG_KEY = "BACKGROUND_THREAD"
#: ``app.extensions`` key of the app's :class:`BackgroundThread`.
BACKGROUND = "redis_archive.background"


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


class BackgroundThread:
    """One app's background thread: at most one per process, started by :meth:`ensure_started`.

    Everything is stamped with the process id: a forked child inherits the parent's
    attributes but not its thread, so a child sees another pid and starts its own.
    """

    def __init__(self, state: ArchiveState) -> None:
        self.state = state
        #: The process the thread was started in (0: none yet).
        self.pid = 0
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        # One lock per process: a fork copies a lock in whatever state another thread of the
        # parent left it, and that thread does not exist in the child to release it.
        self._locks: dict[int, threading.Lock] = {}

    def ensure_started(self) -> threading.Event:
        """Start the thread unless this process started it already; returns its stop event.

        A thread that was stopped stays stopped: the app was closed.
        """
        pid = os.getpid()
        if self.pid == pid:
            return self.stop_event
        with self._locks.setdefault(pid, threading.Lock()):
            if self.pid != pid:
                stop = threading.Event()
                thread = threading.Thread(
                    target=_run, args=(self.state, stop), name="archive-stats", daemon=True
                )
                thread.start()
                self.thread, self.stop_event = thread, stop
                self.state.stats_stop = stop
                # A daemon thread is not joined at exit: stop it first, so its last round
                # releases the scheduler locks and another process takes over at once.
                atexit.register(self.stop)
                self.pid = pid
                logger.debug("background thread started in process %d", pid)
        return self.stop_event

    def running(self) -> bool:
        """Whether this process runs the thread now."""
        return self.pid == os.getpid() and self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Stop this process's thread, waiting up to ``timeout`` s for its last round; whether it ended."""
        if self.pid != os.getpid() or self.thread is None:
            return True
        self.stop_event.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def start_on_request(self) -> None:
        """``before_request`` hook: the process's first request starts the thread."""
        if self.pid != os.getpid():
            self.ensure_started()


def background_of(app: Flask) -> BackgroundThread:
    """The app's :class:`BackgroundThread`."""
    background: BackgroundThread | None = app.extensions.get(BACKGROUND)
    if background is None:
        background = app.extensions.setdefault(BACKGROUND, BackgroundThread(app.extensions[EXTENSION]))
    return background


def init_background(app: Flask) -> None:
    """Have each process that serves ``app`` start its background thread with its first request.

    Why the first request and not the factory or ``os.register_at_fork``: a WSGI server may
    build the app in a process that never serves it (gunicorn's master with ``--preload``,
    the reloader's watcher of ``flask run``) and fork the serving processes from it, and a
    thread running while its process forks is copied without itself, with whatever lock it
    held at that instant held for good in the child. The first request comes in a process that
    serves, after any fork, under every server, without knowing which server that is; the pid
    stamp keeps it to one thread per process. The factory registers this hook before any that
    can refuse a request (auth), so a refused request starts the thread too.
    """
    background = background_of(app)
    if app.config.get(CONFIG_KEY, not app.testing):
        # A plain function, not the bound method: ArchiveFlask remembers Flask's async check
        # for functions only, and this hook runs on every request.
        def _start_directly(environ: dict[str, Any]) -> bool:
            background.start_on_request()
            return True

        @direct_twin(_start_directly)
        def _start_background() -> None:
            background.start_on_request()

        app.before_request(_start_background)


def start_stats_thread(app: Flask) -> threading.Event:
    """Start this process's background thread (a daemon) unless it runs; set the returned event to stop it."""
    return background_of(app).ensure_started()
