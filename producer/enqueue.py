"""Enqueueing jobs by dotted path: the options of each job, the retry policy, durability.

:func:`enqueue` and :func:`enqueue_many` are the producer's only write path; both go through
:func:`write_with_retry`, which rides out a failover and, for durable enqueue, waits for
replicas (``WAIT``) around the inner write, :func:`write_jobs`. That one is the seam's
:class:`shared.rqmodel.writes.JobWriter`: exactly the job hash RQ's ``Queue.enqueue`` writes,
in one round trip per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rq import Callback, Retry

from shared.backoff import Backoff
from shared.connections import UNAVAILABLE_ERRORS
from shared.rqmodel.dates import new_id
from shared.rqmodel.writes import JobWriter
from shared.settings import Settings
from shared.spaces import Space

from .exceptions import BackendUnavailable
from .state import ArchiveState

logger = logging.getLogger(__name__)

ON_SUCCESS = "consumer.events.on_success"
ON_FAILURE = "consumer.events.on_failure"

#: Backoff between enqueue attempts during a failover: doubles from 50 ms to half a second.
RETRY_BACKOFF = Backoff(first=0.05, cap=0.5)


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


def write_jobs(
    state: ArchiveState,
    queue_name: str,
    func: str,
    name: str,
    arg_lists: Sequence[Sequence[Any]],
    ids: Sequence[str] | None = None,
    space: Space | None = None,
) -> list[str]:
    """Write one job per argument list, atomically, in one round trip; returns their ids.

    The jobs go to ``space`` (one namespace), by default the queue's next one. The script also
    counts the jobs as enqueued; the write's latency goes to the process's pending histogram,
    which the stats thread (and ``/metrics``) flush to Redis.
    """
    started = time.perf_counter()
    writer = state.writers[space or state.route(queue_name)]
    ids = writer.write(queue_name, func, name, arg_lists, ids)
    state.enqueue_latency.observe(queue_name, time.perf_counter() - started)
    return ids


class _Attempt:
    """One write (a job or a bulk of jobs, all or none) across its retries."""

    def __init__(self, state: ArchiveState, space: Space, ids: list[str], deadline: float) -> None:
        self.state = state
        self.space = space
        self.ids = ids
        self.deadline = deadline
        self.written = False
        #: The last write or check got no answer: the jobs may or may not be on the master.
        self.unsure = False
        self.reason = ""

    def run(self, write: Callable[[], object]) -> bool:
        """One attempt: write (unless known to be there), then, if asked, confirm on replicas."""
        settings = self.state.settings
        try:
            # The script writes all jobs or none, so the first job's hash tells.
            if self.unsure and self.state.writers[self.space].exists(self.ids[0]):
                self.written = True  # the write went through although its reply was lost
            elif not self.written or self.unsure:
                write()
                self.written = True
            self.unsure = False
            wanted = settings.enqueue_min_replicas
            if wanted <= 0:
                return True
            remaining_ms = int((self.deadline - time.monotonic()) * 1000)
            cap_ms = min(settings.enqueue_replica_timeout_ms, _max_wait_ms(settings))
            timeout_ms = max(1, min(cap_ms, remaining_ms))
            present, acked = _wait_for_replicas(self.space, self.ids[0], wanted, timeout_ms)
            if not present:
                # Written to a master that died before its replicas had it: write it again.
                self.written = False
                self.reason = "the job is missing on the current master"
                return False
            if acked >= wanted:
                return True
            self.reason = f"{acked} of {wanted} replicas acknowledged the job within {timeout_ms} ms"
        except UNAVAILABLE_ERRORS as exc:
            self.unsure = True
            self.reason = f"{type(exc).__name__}: {exc}"
        return False


def _wait_for_replicas(space: Space, job_id: str, wanted: int, timeout_ms: int) -> tuple[bool, int]:
    """(job present on this master, replicas that acknowledged everything up to now).

    ``WAIT`` counts the writes of its own connection only, and a pooled client may have
    written the job on another one, so a marker write goes first on the same connection:
    a replica that has the marker has every earlier write, the job included.
    """
    keys = space.keys
    pipe = space.client.pipeline(transaction=False)
    pipe.exists(keys.job(job_id))
    pipe.incr(keys.durable_marker)
    pipe.wait(wanted, timeout_ms)
    present, _, acked = pipe.execute()
    return bool(present), int(acked)


def _max_wait_ms(settings: Settings) -> int:
    """``WAIT`` must answer before the socket times out."""
    return max(1, int(settings.socket_timeout * 1000) - 200)


def _withdraw(writer: JobWriter, queue_name: str, ids: Sequence[str]) -> None:
    """Best effort after a refused durable enqueue: unqueue the jobs no worker has taken yet."""
    try:
        writer.withdraw(queue_name, ids)
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("could not withdraw %d refused job(s): %s", len(ids), exc)


def write_with_retry(
    state: ArchiveState,
    queue_name: str,
    func: str,
    name: str,
    arg_lists: Sequence[Sequence[Any]],
    routing_key: str | None = None,
) -> list[str]:
    """:func:`write_jobs`, retried across a failover and, if asked, confirmed on replicas.

    Connection and read-only errors are retried with a bounded backoff for
    ``ENQUEUE_RETRY_SECONDS``; then :class:`BackendUnavailable` (503). The ids are chosen
    once, so a retry after an unanswered write checks for the jobs instead of adding second
    copies. With ``ENQUEUE_MIN_REPLICAS`` > 0 the jobs count as written only when that many
    replicas have them. All the jobs of one call go to one namespace of the queue (the next
    in turn, or the one of ``routing_key``), so a bulk write is all or none.
    """
    settings = state.settings
    space = state.route(queue_name, routing_key)
    ids = [new_id() for _ in arg_lists]
    deadline = time.monotonic() + settings.enqueue_retry_seconds
    if settings.enqueue_min_replicas <= 0:
        # The common case, without the retry machinery unless the first write fails.
        try:
            write_jobs(state, queue_name, func, name, arg_lists, ids, space)
            return ids
        except UNAVAILABLE_ERRORS as exc:
            attempt = _Attempt(state, space, ids, deadline)
            attempt.unsure = True
            attempt.reason = f"{type(exc).__name__}: {exc}"
            first_failed = True
    else:
        attempt = _Attempt(state, space, ids, deadline)
        first_failed = False

    def write() -> object:
        return write_jobs(state, queue_name, func, name, arg_lists, ids, space)

    tries = 1
    waits = RETRY_BACKOFF.start()
    done = False if first_failed else attempt.run(write)
    while not done:
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            _refuse(state, queue_name, attempt, tries)
        pause = min(waits.next_delay(), remaining)
        logger.warning("enqueue of %s failed (%s); retrying in %.2fs", ids[0], attempt.reason, pause)
        time.sleep(pause)
        tries += 1
        done = attempt.run(write)
    if tries > 1:
        logger.info("enqueue of %s succeeded after %d attempts", ids[0], tries)
    return ids


def _refuse(state: ArchiveState, queue_name: str, attempt: _Attempt, tries: int) -> NoReturn:
    """Give up: withdraw written but unconfirmed jobs if nobody has them yet, answer 503."""
    logger.error("enqueue of %s refused after %d attempts: %s", attempt.ids[0], tries, attempt.reason)
    durable = state.settings.enqueue_min_replicas > 0
    if durable and attempt.written:
        _withdraw(state.writers[attempt.space], queue_name, attempt.ids)
    if durable and not attempt.unsure:
        message = f"the job could not be stored durably: {attempt.reason}"
    else:
        message = "Redis is unreachable; retry later"
    raise BackendUnavailable(message, headers={"Retry-After": "1"})


def enqueue(
    state: ArchiveState, queue_name: str, func: str, name: str, *args: Any, routing_key: str | None = None
) -> str:
    """Write a job to ``queue_name``; returns its id once Redis has it (and, if asked, replicas)."""
    [job_id] = write_with_retry(state, queue_name, func, name, [args], routing_key)
    logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    return job_id


def enqueue_many(
    state: ArchiveState,
    queue_name: str,
    func: str,
    name: str,
    arg_lists: Sequence[Sequence[Any]],
    routing_key: str | None = None,
) -> list[str]:
    """Write many jobs of one kind at once (all or none, in one namespace); returns their ids in order."""
    ids = write_with_retry(state, queue_name, func, name, arg_lists, routing_key)
    for job_id in ids:
        logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    return ids
