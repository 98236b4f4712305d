"""Enqueueing jobs by dotted path, with the retry policy and life-cycle callbacks.

:func:`enqueue` and :func:`enqueue_many` are the producer's only write path. They write
exactly the job hash RQ's ``Queue.enqueue`` writes (same fields, same encoding), but build it
from a per-(queue, function, name) template instead of a full ``Job`` per call, and write the
hashes and the queue push with one script call: atomic, one round trip (RQ needs two per job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from redis import Redis
from redis.exceptions import NoScriptError
from rq import Callback, Retry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from shared import stats
from shared.constants import ENQUEUE_LATENCY_KEY, JOB_STATS_KEY
from shared.settings import Settings

from .state import ArchiveState

logger = logging.getLogger(__name__)

ON_SUCCESS = "consumer.events.on_success"
ON_FAILURE = "consumer.events.on_failure"


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


def write_jobs(
    state: ArchiveState, queue_name: str, func: str, name: str, arg_lists: Sequence[Sequence[Any]]
) -> list[str]:
    """Write one job per argument list, atomically, in one round trip; returns their ids.

    The script also counts the jobs as enqueued; the write's latency goes to the process's
    pending histogram, which the stats thread (and ``/metrics``) flush to Redis.
    """
    started = time.perf_counter()
    template = _template(state, queue_name, func, name)
    ids = [str(uuid4()) for _ in arg_lists]
    args: list[Any] = [
        _WRITE_JOBS_SHA,
        3,
        template.queue_key,
        template.queues_key,
        JOB_STATS_KEY,
        utcformat(now()),
        len(ids),
        f"{queue_name}:enqueued",
    ]
    for job_id, job_args in zip(ids, arg_lists, strict=True):
        args += [job_id, template.data(job_args)]
    args += template.static
    try:
        state.redis.execute_command("EVALSHA", *args)
    except NoScriptError:
        # First use on this server (or after a restart or failover): load, then run it.
        state.redis.script_load(WRITE_JOBS)
        state.redis.execute_command("EVALSHA", *args)
    enqueue_latency(state).observe(queue_name, time.perf_counter() - started)
    return ids


def enqueue_latency(state: ArchiveState) -> stats.PendingHistogram:
    """This process's enqueue latencies not yet written to Redis."""
    pending: stats.PendingHistogram = state.extra.setdefault(
        "enqueue_latency", stats.PendingHistogram(ENQUEUE_LATENCY_KEY)
    )
    return pending


def enqueue(state: ArchiveState, queue_name: str, func: str, name: str, *args: Any) -> Job:
    """Write a job to ``queue_name`` and return it once Redis has it."""
    [job_id] = write_jobs(state, queue_name, func, name, [args])
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
    ids = write_jobs(state, queue_name, func, name, arg_lists)
    for job_id in ids:
        logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    return ids
