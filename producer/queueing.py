"""Enqueueing jobs by dotted path: retries across a failover, durable enqueue, job options."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, NoReturn

from rq import Callback, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.connections import UNAVAILABLE_ERRORS
from shared.constants import DURABLE_MARKER_KEY
from shared.settings import Settings

from .exceptions import ServiceUnavailable
from .state import ArchiveState

logger = logging.getLogger(__name__)

ON_SUCCESS = "consumer.events.on_success"
ON_FAILURE = "consumer.events.on_failure"

#: Backoff between enqueue attempts during a failover: doubles from the first to the cap.
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 0.5


def job_options(settings: Settings, name: str) -> dict[str, Any]:
    """RQ enqueue options for a job called ``name``: retries, TTLs, callbacks, meta."""
    retries = settings.job_attempts - 1
    options: dict[str, Any] = {
        "job_timeout": settings.job_timeout,
        "result_ttl": settings.result_ttl,
        "failure_ttl": settings.failure_ttl,
        "description": name,
        "meta": {"name": name, "maxAttempts": settings.job_attempts},
        "on_success": Callback(ON_SUCCESS),
        "on_failure": Callback(ON_FAILURE),
    }
    if retries > 0:
        intervals = list(settings.retry_intervals) or [0]
        options["retry"] = Retry(max=retries, interval=intervals)
    return options


def write_job(state: ArchiveState, queue_name: str, func: str, name: str, job_id: str, *args: Any) -> Job:
    """Write one job under ``job_id``: its hash and its queue entry in one transaction."""
    queue = state.queue(queue_name)
    return queue.enqueue(func, *args, job_id=job_id, **job_options(state.settings, name))


def _wait_for_replicas(state: ArchiveState, job: Job, timeout_ms: int) -> tuple[bool, int]:
    """(job present on this master, replicas that acknowledged everything up to now).

    ``WAIT`` counts the writes of its own connection only, and a pooled client may have
    written the job on another one, so a marker write goes first on the same connection:
    a replica that has the marker has every earlier write, the job included.
    """
    pipe = state.redis.pipeline(transaction=False)
    pipe.exists(job.key)
    pipe.incr(DURABLE_MARKER_KEY)
    pipe.wait(state.settings.enqueue_min_replicas, timeout_ms)
    present, _, acked = pipe.execute()
    return bool(present), int(acked)


def _withdraw(state: ArchiveState, queue_name: str, job: Job) -> bool:
    """Best effort after a refused durable enqueue: unqueue ``job`` unless a worker has it."""
    try:
        removed = state.redis.lrem(state.queue(queue_name).key, -1, job.id)
        if removed:
            job.delete(remove_from_queue=False)
            return True
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("could not withdraw job %s: %s", job.id, exc)
    return False


class _Attempt:
    """The state of one enqueue across its attempts."""

    def __init__(self, state: ArchiveState, job_id: str, deadline: float) -> None:
        self.state = state
        self.job_id = job_id
        self.deadline = deadline
        self.job: Job | None = None
        #: The last write or check got no answer: the job may or may not be on the master.
        self.unsure = False
        self.reason = ""

    def run(self, queue_name: str, func: str, name: str, *args: Any) -> bool:
        """One attempt: write the job (unless it is known to be there), then confirm it."""
        settings = self.state.settings
        try:
            if self.unsure and self.state.redis.exists(Job.key_for(self.job_id)):
                # The write went through although its reply was lost.
                if self.job is None:
                    self.job = Job.fetch(self.job_id, connection=self.state.redis, serializer=JSONSerializer)
            elif self.job is None or self.unsure:
                self.job = write_job(self.state, queue_name, func, name, self.job_id, *args)
            self.unsure = False
            wanted = settings.enqueue_min_replicas
            if wanted <= 0:
                return True
            remaining_ms = int((self.deadline - time.monotonic()) * 1000)
            cap_ms = min(settings.enqueue_replica_timeout_ms, _max_wait_ms(settings))
            timeout_ms = max(1, min(cap_ms, remaining_ms))
            present, acked = _wait_for_replicas(self.state, self.job, timeout_ms)
            if not present:
                # Written to a master that died before its replicas had it: write it again.
                self.job = None
                self.reason = "the job is missing on the current master"
                return False
            if acked >= wanted:
                return True
            self.reason = f"{acked} of {wanted} replicas acknowledged the job within {timeout_ms} ms"
        except UNAVAILABLE_ERRORS as exc:
            self.unsure = True
            self.reason = f"{type(exc).__name__}: {exc}"
        return False


def enqueue(state: ArchiveState, queue_name: str, func: str, name: str, *args: Any) -> Job:
    """Write a job to ``queue_name`` and return it once Redis has it (and, if asked, replicas).

    Connection and read-only errors (a failover in progress) are retried with a bounded
    backoff for ``ENQUEUE_RETRY_SECONDS``; then :class:`ServiceUnavailable` (503). The job id
    is chosen once, so a retry after an unanswered write rewrites the same job instead of
    adding a second one. With ``ENQUEUE_MIN_REPLICAS`` > 0 the job counts as accepted only
    when that many replicas have acknowledged it.
    """
    settings = state.settings
    attempt = _Attempt(state, uuid.uuid4().hex, time.monotonic() + settings.enqueue_retry_seconds)
    delay = RETRY_FIRST_DELAY
    tries = 1
    while not attempt.run(queue_name, func, name, *args):
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            _refuse(state, queue_name, attempt, tries)
        pause = min(delay, remaining)
        logger.warning("enqueue of %s failed (%s); retrying in %.2fs", attempt.job_id, attempt.reason, pause)
        time.sleep(pause)
        delay = min(delay * 2, RETRY_MAX_DELAY)
        tries += 1
    job = attempt.job
    assert job is not None
    if tries > 1:
        logger.info("enqueue of %s succeeded after %d attempts", job.id, tries)
    logger.info("job waiting id=%s name=%s queue=%s", job.id, name, queue_name)
    return job


def _refuse(state: ArchiveState, queue_name: str, attempt: _Attempt, tries: int) -> NoReturn:
    """Give up: withdraw a written but unconfirmed job if nobody has it yet, answer 503."""
    logger.error("enqueue of %s refused after %d attempts: %s", attempt.job_id, tries, attempt.reason)
    durable = state.settings.enqueue_min_replicas > 0
    if durable and attempt.job is not None:
        _withdraw(state, queue_name, attempt.job)
    if durable and not attempt.unsure:
        message = f"the job could not be stored durably: {attempt.reason}"
    else:
        message = "Redis is unreachable; retry later"
    raise ServiceUnavailable(message, headers={"Retry-After": "1"})


def _max_wait_ms(settings: Settings) -> int:
    """``WAIT`` must answer before the socket times out."""
    return max(1, int(settings.socket_timeout * 1000) - 200)
