"""Abandoned-job recovery (and RQ's scheduler): re-queue the jobs of fast workers whose heartbeat stopped.

Every :class:`consumer.worker.FastWorker` beats into a sorted set every few seconds. When a
worker's last beat is older than the stale limit (``HEARTBEAT_TIMEOUT`` less a margin, so the
job is back in its queue within ``HEARTBEAT_TIMEOUT`` seconds of the death), any surviving
worker or the monitor (``python -m consumer.recovery``) takes the dead worker's executions:
each job still started by it goes back to its queue, counted as an attempt (one retry used),
or to the failed registry when no attempt is left. Jobs are idempotent, so a re-run after a
death writes its effect once.

The monitor also runs RQ's scheduler (:mod:`shared.scheduler`), so due retries and
``enqueue_at`` jobs go back to their queues when no worker runs ``--with-scheduler``, and
RQ's own clean-up of the started registries every :data:`CLEANUP_INTERVAL` seconds, so the job
of a plain ``rq worker`` killed with its work horse is retried once its execution's heartbeat
expires (RQ: about 90 s) rather than at the next maintenance of a plain rq worker (10 minutes).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.callbacks import execute_failure_callback
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import as_text, now, utcformat

from shared.constants import ALL_QUEUES
from shared.keys import KEYS, Keys
from shared.rqmodel.keys import parse_member
from shared.rqmodel.requeue import Requeued, requeue
from shared.scheduler import ScheduledJobMover

from .events import log_abandoned

logger = logging.getLogger(__name__)

#: How often the monitor (and each worker's heartbeat thread) looks for dead workers.
SCAN_INTERVAL = 1.0
#: How often the monitor runs RQ's clean-up of the started registries (plain rq workers: every 10 min).
CLEANUP_INTERVAL = 10.0


def stale_after(heartbeat_timeout: float) -> float:
    """Seconds without a beat after which a worker counts as dead.

    Leaves room for one scan interval and the re-queue itself, so that a job is back in its
    queue within ``heartbeat_timeout`` seconds of its worker's death.
    """
    return max(heartbeat_timeout - SCAN_INTERVAL - 0.5, min(heartbeat_timeout, 1.0))


def dead_workers(connection: Redis, stale: float, keys: Keys = KEYS) -> list[str]:
    """Names of fast workers whose last beat is older than ``stale`` seconds."""
    names = connection.zrangebyscore(keys.heartbeats, "-inf", time.time() - stale)
    return [as_text(name) for name in names]


def recover_dead_workers(
    connection: Redis, stale: float, serializer: Any = JSONSerializer, keys: Keys = KEYS
) -> list[str]:
    """Recover the jobs of every dead worker; returns the ids of the jobs handled."""
    handled: list[str] = []
    for name in dead_workers(connection, stale, keys):
        handled += recover_worker(connection, name, serializer=serializer, keys=keys)
    return handled


#: Seconds a recoverer holds a dead worker: if it dies half-way, another one finishes after this.
RECOVERY_LOCK_SECONDS = 30


def recover_worker(
    connection: Redis, name: str, serializer: Any = JSONSerializer, keys: Keys = KEYS
) -> list[str]:
    """Re-queue (or fail) the jobs worker ``name`` was running, once, and register its death."""
    # Whoever takes the recovery lock owns the recovery: two monitors never re-queue a job twice.
    # The beat goes only at the end, with the lock: a recoverer cut off half-way (a lost
    # connection, a full Redis refusing the re-queue) leaves the worker dead and listed, and
    # the next scan after the lock expires finishes the work (jobs already handled are skipped).
    lock = keys.recovering(name)
    if not connection.set(lock, uuid.uuid4().hex, nx=True, ex=RECOVERY_LOCK_SECONDS):
        return []
    if connection.zscore(keys.heartbeats, name) is None:
        connection.delete(lock)  # recovered by someone else just before we looked
        return []
    worker_key = keys.worker(name)
    executions_key = keys.worker_executions(name)
    handled = []
    for member in connection.smembers(executions_key):
        job_id, execution_id = parse_member(member)
        if _recover_job(connection, name, job_id, execution_id, serializer):
            handled.append(job_id)
    queues = as_text(connection.hget(worker_key, "queues") or b"")
    with connection.pipeline() as pipe:
        pipe.zrem(keys.heartbeats, name)
        pipe.srem(keys.workers, worker_key)
        for queue in filter(None, queues.split(",")):
            pipe.srem(keys.workers_of(queue), worker_key)
        pipe.hset(worker_key, "death", utcformat(now()))
        pipe.expire(worker_key, 60)
        pipe.delete(executions_key)
        pipe.delete(lock)
        pipe.execute()
    logger.info("worker %s declared dead; %d job(s) recovered", name, len(handled))
    return handled


def _recover_job(connection: Redis, worker: str, job_id: str, execution_id: str, serializer: Any) -> bool:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=serializer)
    except NoSuchJobError:
        execution = Execution(execution_id, job_id, connection, worker_name=worker)
        with connection.pipeline() as pipe:
            pipe.delete(execution.key)
            pipe.srem(execution.worker_executions_key, execution.composite_key)
            pipe.execute()
        return False
    queue = Queue(job.origin, connection=connection, serializer=serializer)
    outcome = requeue(
        connection,
        job,
        queue,
        attempt=True,
        worker=worker,
        reason=f"Worker {worker} died running it (AbandonedJobError)",
        before=_abandoned_callback,
    )
    if outcome is Requeued.QUEUED:
        log_abandoned(job_id, job.origin, f"worker {worker} died; re-queued, {job.retries_left} retries left")
    elif outcome is Requeued.FAILED:
        log_abandoned(job_id, job.origin, f"worker {worker} died; no attempts left, failed")
    return outcome is not Requeued.SKIPPED


def _abandoned_callback(job: Job) -> None:
    """As RQ's own abandoned-job cleanup does: the failure callback sees ``AbandonedJobError``."""
    try:
        if threading.current_thread() is threading.main_thread():
            execute_failure_callback(
                job, UnixSignalDeathPenalty, AbandonedJobError, AbandonedJobError(), None
            )
        else:
            callback = job.failure_callback
            if callback is not None:
                callback(job, job.connection, AbandonedJobError, AbandonedJobError(), None)
    except Exception:
        logger.exception("failure callback of abandoned job %s raised", job.id)


def clean_started_registries(connection: Redis, queues: tuple[str, ...] = ALL_QUEUES) -> None:
    """RQ's clean-up of each queue's started registry: abandoned executions are retried or failed."""
    for name in queues:
        Queue(name, connection=connection, serializer=JSONSerializer).started_job_registry.cleanup()


def run_monitor(connection: Redis, heartbeat_timeout: float, stop: threading.Event | None = None) -> None:
    """Until ``stop`` is set: recover dead workers' jobs, move due scheduled jobs, clean registries."""
    stop = stop or threading.Event()
    stale = stale_after(heartbeat_timeout)
    logger.info("recovery monitor: workers silent for %.1fs are dead; running RQ's scheduler", stale)
    mover = ScheduledJobMover(connection, role="monitor")
    cleaned_at = 0.0
    try:
        while not stop.is_set():
            try:
                recover_dead_workers(connection, stale)
            except RedisError as exc:
                logger.warning("recovery monitor: %s", exc)
            try:
                mover.tick()
            except RedisError as exc:
                logger.warning("recovery monitor: scheduler: %s", exc)
            if time.monotonic() - cleaned_at >= CLEANUP_INTERVAL:
                try:
                    clean_started_registries(connection)
                    cleaned_at = time.monotonic()
                except RedisError as exc:
                    logger.warning("recovery monitor: registry clean-up: %s", exc)
            stop.wait(SCAN_INTERVAL)
    finally:
        try:
            mover.close()
        except RedisError as exc:
            logger.warning("recovery monitor: could not release the scheduler's locks: %s", exc)


def main() -> None:
    """``python -m consumer.recovery``: the recovery monitor of ``redis-archive up`` and compose."""
    from shared.connections import get_redis

    from .context import get_settings

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    connection = get_redis(settings)
    try:
        run_monitor(connection, settings.heartbeat_timeout, stop)
    finally:
        connection.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
