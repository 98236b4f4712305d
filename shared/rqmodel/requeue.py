"""Putting a claimed or abandoned job back in its queue: the one requeue of the project.

Three callers need it: a worker whose claim or bookkeeping a lost master cut off (the job
goes back at the front, no attempt spent: the job did not fail), and the recovery of a dead
worker's jobs, by any worker's heartbeat thread or the monitor (an attempt is spent, as RQ's
abandoned-job clean-up spends one, and a job with none left fails).

Either way the job's started-registry members are matched by job id, not through RQ's
execution hashes: after a failover the new master may lack those hashes (asynchronous
replication), and RQ raises for a missing one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import cast

from redis import Redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue

from shared.rqmodel.internals import push_back
from shared.rqmodel.keys import RQ_KEYS, RQKeys, parse_member

_SETTLED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


class Requeued(enum.Enum):
    """What :func:`requeue` did."""

    QUEUED = "queued"  #: back in its queue
    FAILED = "failed"  #: no attempt left: in the failed registry
    SKIPPED = "skipped"  #: nothing to do (settled, queued already, or not the given worker's)


def requeue(
    connection: Redis,
    job: Job,
    queue: Queue,
    *,
    attempt: bool,
    worker: str | None = None,
    reason: str = "",
    before: Callable[[Job], None] | None = None,
    keys: RQKeys = RQ_KEYS,
) -> Requeued:
    """Put ``job`` back in ``queue`` unless Redis shows it settled or queued already.

    ``attempt=False`` (a cut-off claim): back at the front, ``retries_left`` untouched.
    ``attempt=True`` (an abandoned job of dead worker ``worker``): only while the job is still
    started by that worker; one retry spent and back at the end of the queue (or the front, as
    its retry says), or failed with ``reason`` when none is left. ``before`` runs once the job
    is known to go back or fail, before anything is written (the failure callback of an
    abandoned job).
    """
    try:
        status = job.get_status(refresh=True)
    except InvalidJobOperation:
        return Requeued.SKIPPED  # the job hash is gone (expired, or not on a new master)
    members = cast(list[bytes], connection.zrange(queue.started_job_registry.key, 0, -1))
    stale = [member for member in members if parse_member(member)[0] == job.id]
    owner = worker or job.worker_name
    if attempt:
        # Only the dead worker's own executions: the job may run on a live worker by now.
        own = set(connection.smembers(keys.worker_executions(worker or "")))
        stale = [member for member in stale if member in own]
        go_back = status == JobStatus.STARTED and job.worker_name == worker
    else:
        go_back = status in (JobStatus.QUEUED, JobStatus.STARTED) and not (
            status == JobStatus.QUEUED and connection.lpos(queue.key, job.id) is not None
        )
    if not go_back:
        if attempt and stale:
            _forget(connection, queue, stale, owner, keys)
        return Requeued.SKIPPED
    if before is not None:
        before(job)
    fail = attempt and not (job.retries_left and job.retries_left > 0)
    with connection.pipeline() as pipe:
        if not attempt:
            # enqueue_job opens the transaction (MULTI), so it goes first; it saves the job whole.
            queue.enqueue_job(job, pipeline=pipe, at_front=True)
        elif not fail:
            assert job.retries_left is not None
            job.retries_left -= 1
            # Straight back to the queue: the worker died, the job did not fail; no backoff.
            push_back(queue, job, pipe, at_front=job.enqueue_at_front_on_retry)
        else:
            record_job_failure(job, reason or f"Worker {worker} died running it", pipe)
        _forget(pipe, queue, stale, owner, keys)
        pipe.lrem(queue.intermediate_queue_key, 0, job.id)
        pipe.execute()
    if fail:
        queue.enqueue_dependents(job, refresh_job_status=False)
        return Requeued.FAILED
    return Requeued.QUEUED


def _forget(connection: Redis, queue: Queue, members: list[bytes], worker: str | None, keys: RQKeys) -> None:
    """Drop the executions ``members`` (started-registry entries) of a job going back or settled."""
    if not members:
        return
    connection.zrem(queue.started_job_registry.key, *members)
    for member in members:
        job_id, execution_id = parse_member(member)
        connection.delete(keys.execution(job_id, execution_id))
        if worker:
            connection.srem(keys.worker_executions(worker), member)
