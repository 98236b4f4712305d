"""Enqueueing jobs by dotted path, with the retry policy and life-cycle callbacks."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError
from rq import Callback, Retry
from rq.job import Job

from shared import stats
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


def enqueue(state: ArchiveState, queue_name: str, func: str, name: str, *args: Any) -> Job:
    """Write a job to ``queue_name`` and return it once Redis has it."""
    queue = state.queue(queue_name)
    started = time.perf_counter()
    job = queue.enqueue(func, *args, **job_options(state.settings, name))
    latency = time.perf_counter() - started
    logger.info("job waiting id=%s name=%s queue=%s", job.id, name, queue_name)
    try:
        stats.record_enqueued(state.redis, queue_name, latency)
    except RedisError as exc:
        # The job is accepted; a lost metric must not turn that into an error.
        logger.warning("could not count job %s as enqueued: %s", job.id, exc)
    return job
