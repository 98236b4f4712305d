"""Enqueueing jobs by dotted path, with the retry policy and life-cycle callbacks.

:func:`enqueue` and :func:`enqueue_many` are the producer's only write path; both go through
:func:`write_with_retry`, which rides out a failover and, for durable enqueue, waits for
replicas (``WAIT``) around the inner write, :func:`write_jobs`. That one writes exactly the
job hash RQ's ``Queue.enqueue`` writes (same fields, same encoding), but builds it from a
per-(queue, function, name) template instead of a full ``Job`` per call, and writes the
hashes and the queue push with one script call: atomic, one round trip (RQ needs two per job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from uuid import uuid4

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Callback, Retry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now

from shared import stats
from shared.connections import UNAVAILABLE_ERRORS
from shared.constants import DURABLE_MARKER_KEY, ENQUEUE_LATENCY_KEY, JOB_STATS_KEY
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


#: KEYS: the queue, the set of queues, the job counters. ARGV: stamp, n, the counter's field,
#: n (id, data) pairs, the template's field/value pairs. Writes n job hashes (template + data +
#: timestamps), pushes their ids and counts them as enqueued (for ``/metrics``).
WRITE_JOBS = """
local stamp, n, counter = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local fields = {}
for i = 4 + 2 * n, #ARGV do fields[#fields + 1] = ARGV[i] end
for _, f in ipairs({'created_at', stamp, 'enqueued_at', stamp, 'data'}) do fields[#fields + 1] = f end
local ids = {}
for j = 0, n - 1 do
  local id = ARGV[4 + 2 * j]
  fields[#fields + 1] = ARGV[5 + 2 * j]
  redis.call('HSET', 'rq:job:' .. id, unpack(fields))
  fields[#fields] = nil
  ids[#ids + 1] = id
end
redis.call('SADD', KEYS[2], KEYS[1])
for i = 1, #ids, 1000 do redis.call('RPUSH', KEYS[1], unpack(ids, i, math.min(i + 999, #ids))) end
redis.call('HINCRBY', KEYS[3], counter, n)
return n
"""
_WRITE_JOBS_SHA = hashlib.sha1(WRITE_JOBS.encode()).hexdigest()


class JobTemplate:
    """The fields RQ would write for every job of one (queue, function, name), computed once."""

    def __init__(self, connection: Redis, settings: Settings, queue_name: str, func: str, name: str) -> None:
        queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        options = job_options(settings, name)
        retry: Retry | None = options.pop("retry", None)
        job = queue.create_job(
            func,
            timeout=options.pop("job_timeout"),
            retry=retry,
            status=JobStatus.QUEUED,
            **options,
        )
        job.origin = queue_name
        job.enqueued_at = now()
        job._status = JobStatus.QUEUED
        mapping = job.to_dict()
        for volatile in ("data", "created_at", "enqueued_at"):
            mapping.pop(volatile)
        # Encoded as redis-py would encode them for HSET.
        encode = connection.get_encoder().encode
        self.static: list[bytes] = []
        for field, value in mapping.items():
            self.static += [encode(field), encode(value)]
        self.func = func
        self.queue_key = queue.key
        self.queues_key = queue.redis_queues_keys
        head = [_WRITE_JOBS_SHA.encode(), b"3", self.queue_key.encode(), self.queues_key.encode()]
        head = [b"EVALSHA", *head, JOB_STATS_KEY.encode()]
        self.head = b"".join(_bulk(part) for part in head)
        self.head_count = len(head)
        self.static_packed = b"".join(_bulk(part) for part in self.static)
        self.static_count = len(self.static)

    def data(self, args: Sequence[Any]) -> bytes:
        """The job's ``data`` field for ``func(*args)``, as RQ's JSON serializer writes it."""
        return zlib.compress(json.dumps([self.func, None, list(args), {}]).encode())


def _template(state: ArchiveState, queue_name: str, func: str, name: str) -> JobTemplate:
    templates: dict[tuple[str, str, str], JobTemplate] = state.extra.setdefault("job_templates", {})
    template = templates.get((queue_name, func, name))
    if template is None:
        template = templates[queue_name, func, name] = JobTemplate(
            state.redis, state.settings, queue_name, func, name
        )
    return template


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def write_jobs(
    state: ArchiveState,
    queue_name: str,
    func: str,
    name: str,
    arg_lists: Sequence[Sequence[Any]],
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Write one job per argument list, atomically, in one round trip; returns their ids.

    The script also counts the jobs as enqueued; the write's latency goes to the process's
    pending histogram, which the stats thread (and ``/metrics``) flush to Redis.
    """
    started = time.perf_counter()
    template = _template(state, queue_name, func, name)
    ids = list(ids) if ids is not None else [str(uuid4()) for _ in arg_lists]
    stamp = now().replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # RQ's utcformat
    # The command is packed here: the template's ~40 fields are packed once, not per call.
    parts = [_bulk(stamp.encode()), _bulk(b"%d" % len(ids)), _bulk(f"{queue_name}:enqueued".encode())]
    for job_id, job_args in zip(ids, arg_lists, strict=True):
        parts += [_bulk(job_id.encode()), _bulk(template.data(job_args))]
    count = template.head_count + 3 + 2 * len(ids) + template.static_count
    command = b"*%d\r\n" % count + template.head + b"".join(parts) + template.static_packed
    try:
        _send(state.redis, command)
    except NoScriptError:
        # First use on this server (or after a restart or failover): load, then run it.
        state.redis.script_load(WRITE_JOBS)
        _send(state.redis, command)
    enqueue_latency(state).observe(queue_name, time.perf_counter() - started)
    return ids


def enqueue_latency(state: ArchiveState) -> stats.PendingHistogram:
    """This process's enqueue latencies not yet written to Redis."""
    pending: stats.PendingHistogram = state.extra.setdefault(
        "enqueue_latency", stats.PendingHistogram(ENQUEUE_LATENCY_KEY)
    )
    return pending


class _Attempt:
    """One write (a job or a bulk of jobs, all or none) across its retries."""

    def __init__(self, state: ArchiveState, ids: list[str], deadline: float) -> None:
        self.state = state
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
            if self.unsure and self.state.redis.exists(Job.key_for(self.ids[0])):
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
            present, acked = _wait_for_replicas(self.state, self.ids[0], timeout_ms)
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


def _wait_for_replicas(state: ArchiveState, job_id: str, timeout_ms: int) -> tuple[bool, int]:
    """(job present on this master, replicas that acknowledged everything up to now).

    ``WAIT`` counts the writes of its own connection only, and a pooled client may have
    written the job on another one, so a marker write goes first on the same connection:
    a replica that has the marker has every earlier write, the job included.
    """
    pipe = state.redis.pipeline(transaction=False)
    pipe.exists(Job.key_for(job_id))
    pipe.incr(DURABLE_MARKER_KEY)
    pipe.wait(state.settings.enqueue_min_replicas, timeout_ms)
    present, _, acked = pipe.execute()
    return bool(present), int(acked)


def _max_wait_ms(settings: Settings) -> int:
    """``WAIT`` must answer before the socket times out."""
    return max(1, int(settings.socket_timeout * 1000) - 200)


def _withdraw(state: ArchiveState, queue_name: str, ids: Sequence[str]) -> None:
    """Best effort after a refused durable enqueue: unqueue the jobs no worker has taken yet."""
    queue_key = Queue.redis_queue_namespace_prefix + queue_name
    try:
        pipe = state.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.lrem(queue_key, -1, job_id)
        removed = pipe.execute()
        gone = [Job.key_for(job_id) for job_id, count in zip(ids, removed, strict=True) if count]
        if gone:
            state.redis.delete(*gone)
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("could not withdraw %d refused job(s): %s", len(ids), exc)


def write_with_retry(
    state: ArchiveState, queue_name: str, func: str, name: str, arg_lists: Sequence[Sequence[Any]]
) -> list[str]:
    """:func:`write_jobs`, retried across a failover and, if asked, confirmed on replicas.

    Connection and read-only errors are retried with a bounded backoff for
    ``ENQUEUE_RETRY_SECONDS``; then :class:`ServiceUnavailable` (503). The ids are chosen
    once, so a retry after an unanswered write checks for the jobs instead of adding second
    copies. With ``ENQUEUE_MIN_REPLICAS`` > 0 the jobs count as written only when that many
    replicas have them.
    """
    settings = state.settings
    ids = [str(uuid4()) for _ in arg_lists]
    attempt = _Attempt(state, ids, time.monotonic() + settings.enqueue_retry_seconds)

    def write() -> object:
        return write_jobs(state, queue_name, func, name, arg_lists, ids)

    delay = RETRY_FIRST_DELAY
    tries = 1
    while not attempt.run(write):
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            _refuse(state, queue_name, attempt, tries)
        pause = min(delay, remaining)
        logger.warning("enqueue of %s failed (%s); retrying in %.2fs", ids[0], attempt.reason, pause)
        time.sleep(pause)
        delay = min(delay * 2, RETRY_MAX_DELAY)
        tries += 1
    if tries > 1:
        logger.info("enqueue of %s succeeded after %d attempts", ids[0], tries)
    return ids


def _refuse(state: ArchiveState, queue_name: str, attempt: _Attempt, tries: int) -> NoReturn:
    """Give up: withdraw written but unconfirmed jobs if nobody has them yet, answer 503."""
    logger.error("enqueue of %s refused after %d attempts: %s", attempt.ids[0], tries, attempt.reason)
    durable = state.settings.enqueue_min_replicas > 0
    if durable and attempt.written:
        _withdraw(state, queue_name, attempt.ids)
    if durable and not attempt.unsure:
        message = f"the job could not be stored durably: {attempt.reason}"
    else:
        message = "Redis is unreachable; retry later"
    raise ServiceUnavailable(message, headers={"Retry-After": "1"})


def _send(client: Redis, command: bytes) -> Any:
    """Send a packed command on a pooled connection and read its reply.

    A connection that fails is dropped and the error raised: :func:`write_with_retry` decides
    whether the write went through before trying again, so the jobs are never written twice.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([command])
        return connection.read_response()
    except (RedisConnectionError, RedisTimeoutError):
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def enqueue(state: ArchiveState, queue_name: str, func: str, name: str, *args: Any) -> Job:
    """Write a job to ``queue_name`` and return it once Redis has it (and, if asked, replicas)."""
    [job_id] = write_with_retry(state, queue_name, func, name, [args])
    logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    # A handle on the written job (its id and queue); ``refresh()`` reads the rest. Built
    # without a serializer first: resolving one costs a Protocol isinstance check per job.
    job = Job(job_id, connection=state.redis)
    job.serializer = JSONSerializer
    job.origin = queue_name
    return job


def enqueue_many(
    state: ArchiveState, queue_name: str, func: str, name: str, arg_lists: Sequence[Sequence[Any]]
) -> list[str]:
    """Write many jobs of one kind at once (all or none); returns their ids in order."""
    ids = write_with_retry(state, queue_name, func, name, arg_lists)
    for job_id in ids:
        logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    return ids
