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
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
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


#: One job. KEYS: its hash, the queue, the set of queues, the job counters. ARGV: the counter's
#: field, the job id, then the hash's field/value pairs, complete: Lua only passes them on.
WRITE_JOB = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return 1
"""

#: Many jobs. KEYS: the queue, the set of queues, the job counters. ARGV: stamp, n, the
#: counter's field, n (id, data) pairs, the template's field/value pairs. Writes n job hashes
#: (template + data + timestamps), pushes their ids and counts them as enqueued.
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
SCRIPTS = {hashlib.sha1(script.encode()).hexdigest(): script for script in (WRITE_JOB, WRITE_JOBS)}
_WRITE_JOB_SHA, _WRITE_JOBS_SHA = SCRIPTS


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
        keys = [self.queue_key.encode(), self.queues_key.encode(), JOB_STATS_KEY.encode()]
        counter = f"{queue_name}:enqueued".encode()
        head = [b"EVALSHA", _WRITE_JOBS_SHA.encode(), b"3", *keys]
        self.head = b"".join(_bulk(part) for part in head)
        self.head_count = len(head)
        self.static_packed = b"".join(_bulk(part) for part in self.static)
        self.static_count = len(self.static)
        # One job: EVALSHA sha 4 <job key> | queue, queues, stats, counter, <id>, static fields ...
        self.one_head = _bulk(b"EVALSHA") + _bulk(_WRITE_JOB_SHA.encode()) + _bulk(b"4")
        self.one_middle = b"".join(_bulk(part) for part in [*keys, counter])
        self.one_count = 3 + 1 + 4 + 1 + self.static_count + 6

    def data(self, args: Sequence[Any]) -> bytes:
        """The job's ``data`` field for ``func(*args)``, as RQ's JSON serializer writes it."""
        return compress(json.dumps([self.func, None, list(args), {}]).encode())


def compress(raw: bytes) -> bytes:
    """``zlib.compress(raw)`` as RQ stores job data, at a fraction of the cost for small payloads.

    ``zlib.compress`` sets up a 256 KiB deflate state per call (about 50 us here, more than
    the enqueue's own round trip); a payload that fits a 512-byte window compresses the same
    with a 2 KiB state (about 3 us). The stream is standard zlib: ``zlib.decompress``, and so
    RQ, reads it unchanged.
    """
    if len(raw) > SMALL_PAYLOAD:
        return zlib.compress(raw)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 9, 1)
    return compressor.compress(raw) + compressor.flush()


#: Payloads up to this many bytes are compressed with a window of the same size (``wbits`` 9).
SMALL_PAYLOAD = 512


def _template(state: ArchiveState, queue_name: str, func: str, name: str) -> JobTemplate:
    templates: dict[tuple[str, str, str], JobTemplate] = state.extra.setdefault("job_templates", {})
    template = templates.get((queue_name, func, name))
    if template is None:
        template = templates[queue_name, func, name] = JobTemplate(
            state.redis, state.settings, queue_name, func, name
        )
    return template


def new_id() -> str:
    """A random UUID4 in RQ's form (``str(uuid4())``), formatted directly: a third of the cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: The variant nibble of a UUID4 ("10xx" in binary) for each possible random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class _Stamp:
    """RQ's ``utcformat(now())`` (``2026-11-25T23:24:00.123456Z``), date part cached per second."""

    second = -1
    prefix = ""

    @classmethod
    def now(cls) -> bytes:
        stamp = time.time()
        second = int(stamp)
        if second != cls.second:
            cls.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cls.second = second
        return f"{cls.prefix}.{int((stamp - second) * 1e6):06d}Z".encode()


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
    ids = list(ids) if ids is not None else [new_id() for _ in arg_lists]
    stamp = _bulk(_Stamp.now())
    # The command is packed here: the template's ~40 fields are packed once, not per call.
    if len(ids) == 1:
        job_id = ids[0].encode()
        command = b"".join(
            (
                b"*%d\r\n" % template.one_count,
                template.one_head,
                _bulk(b"rq:job:" + job_id),
                template.one_middle,
                _bulk(job_id),
                template.static_packed,
                b"$10\r\ncreated_at\r\n",
                stamp,
                b"$11\r\nenqueued_at\r\n",
                stamp,
                b"$4\r\ndata\r\n",
                _bulk(template.data(arg_lists[0])),
            )
        )
    else:
        parts = [stamp, _bulk(b"%d" % len(ids)), _bulk(f"{queue_name}:enqueued".encode())]
        for job_id_str, job_args in zip(ids, arg_lists, strict=True):
            parts += [_bulk(job_id_str.encode()), _bulk(template.data(job_args))]
        count = template.head_count + 3 + 2 * len(ids) + template.static_count
        command = b"*%d\r\n" % count + template.head + b"".join(parts) + template.static_packed
    try:
        _send(state, command)
    except NoScriptError:
        # First use on this server (or after a restart or failover): load, then run it.
        for script in SCRIPTS.values():
            state.redis.script_load(script)
        _send(state, command)
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
    ids = [new_id() for _ in arg_lists]
    deadline = time.monotonic() + settings.enqueue_retry_seconds
    if settings.enqueue_min_replicas <= 0:
        # The common case, without the retry machinery unless the first write fails.
        try:
            write_jobs(state, queue_name, func, name, arg_lists, ids)
            return ids
        except UNAVAILABLE_ERRORS as exc:
            attempt = _Attempt(state, ids, deadline)
            attempt.unsure = True
            attempt.reason = f"{type(exc).__name__}: {exc}"
            first_failed = True
    else:
        attempt = _Attempt(state, ids, deadline)
        first_failed = False

    def write() -> object:
        return write_jobs(state, queue_name, func, name, arg_lists, ids)

    delay = RETRY_FIRST_DELAY
    tries = 1
    done = False if first_failed else attempt.run(write)
    while not done:
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            _refuse(state, queue_name, attempt, tries)
        pause = min(delay, remaining)
        logger.warning("enqueue of %s failed (%s); retrying in %.2fs", ids[0], attempt.reason, pause)
        time.sleep(pause)
        delay = min(delay * 2, RETRY_MAX_DELAY)
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
        _withdraw(state, queue_name, attempt.ids)
    if durable and not attempt.unsure:
        message = f"the job could not be stored durably: {attempt.reason}"
    else:
        message = "Redis is unreachable; retry later"
    raise ServiceUnavailable(message, headers={"Retry-After": "1"})


#: A held connection idle for longer is checked for a close by the server before it is used.
IDLE_CHECK_SECONDS = 1.0


class _Lease:
    """A connection checked out of the pool for one thread; given back when the thread ends."""

    def __init__(self, pool: Any) -> None:
        self.connection: AbstractConnection = pool.get_connection()
        self.pid = os.getpid()
        self.used_at = time.monotonic()
        weakref.finalize(self, _give_back, pool, self.connection, self.pid)


def _give_back(pool: Any, connection: AbstractConnection, pid: int) -> None:
    if pid == os.getpid():
        pool.release(connection)


class _Held(threading.local):
    lease: _Lease | None = None


def _stale(connection: AbstractConnection) -> bool:
    """Whether the server closed ``connection`` or left unread data on it."""
    try:
        return bool(connection.can_read())
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return True


def _send(state: ArchiveState, command: bytes) -> Any:
    """Send a packed command on this thread's held connection and read its reply.

    The connection stays checked out of the pool between calls (the pool still tracks it, so
    closing the pool closes it, and it goes back when the thread ends): taking one from the
    pool and giving it back costs a readiness ``poll`` and the pool's bookkeeping on every
    enqueue. Idle connections are still health-checked (``health_check_interval``). A
    connection that fails is dropped and the error raised: :func:`write_with_retry` decides
    whether the write went through before trying again, so the jobs are never written twice.
    After a fork the parent's connection is left alone.
    """
    held: _Held = state.extra.get("held_connection") or state.extra.setdefault("held_connection", _Held())
    lease = held.lease
    if lease is None or lease.pid != os.getpid():
        lease = held.lease = _Lease(state.redis.connection_pool)
    connection = lease.connection
    now = time.monotonic()
    idle = now - lease.used_at > IDLE_CHECK_SECONDS
    lease.used_at = now
    if idle and _stale(connection):
        # As the pool checks a connection it hands out: after a pause the server may have
        # closed it (its ``timeout``, a proxy); reconnect now rather than fail and retry.
        connection.disconnect()
    try:
        connection.send_packed_command([command])
        return connection.read_response()
    except ResponseError:
        raise  # an error reply: the connection is in step and stays
    except BaseException:
        # Unknown state (no reply, half a reply, interrupted): never reuse this connection.
        held.lease = None
        connection.disconnect()
        raise


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
