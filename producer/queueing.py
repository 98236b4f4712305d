"""Enqueueing jobs by dotted path, with the retry policy and life-cycle callbacks.

:func:`enqueue` and :func:`enqueue_many` are the producer's only write path. They write
exactly the job hash RQ's ``Queue.enqueue`` writes (same fields, same encoding), but build it
from a per-(queue, function, name) template instead of a full ``Job`` per call, and send the
hash and the queue push as one ``MULTI``/``EXEC`` in one round trip (RQ needs two).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from redis import Redis
from rq import Callback, Retry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

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
        self.static = mapping
        self.func = func
        self.queue_key = queue.key
        self.queues_key = queue.redis_queues_keys
        self.connection = connection

    def mapping(self, args: Sequence[Any], stamp: str) -> dict[str, Any]:
        """The job hash for ``func(*args)`` enqueued at ``stamp``."""
        data = json.dumps([self.func, None, list(args), {}]).encode()
        return {**self.static, "data": zlib.compress(data), "created_at": stamp, "enqueued_at": stamp}


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
    """Write one job per argument list in one round trip (``MULTI``/``EXEC``); returns their ids."""
    template = _template(state, queue_name, func, name)
    stamp = utcformat(now())
    ids = [str(uuid4()) for _ in arg_lists]
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(template.queues_key, template.queue_key)
        for job_id, args in zip(ids, arg_lists, strict=True):
            pipe.hset(Job.key_for(job_id), mapping=template.mapping(args, stamp))
        pipe.rpush(template.queue_key, *ids)
        pipe.execute()
    return ids


def enqueue(state: ArchiveState, queue_name: str, func: str, name: str, *args: Any) -> Job:
    """Write a job to ``queue_name`` and return it once Redis has it."""
    [job_id] = write_jobs(state, queue_name, func, name, [args])
    logger.info("job waiting id=%s name=%s queue=%s", job_id, name, queue_name)
    # A handle on the written job (its id and queue); ``refresh()`` reads the rest.
    job = Job(job_id, connection=state.redis, serializer=JSONSerializer)
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
