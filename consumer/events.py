"""Job life-cycle events: logged (waiting, active, completed, failed, abandoned) and alerted.

The producer attaches :func:`on_success` and :func:`on_failure` as RQ callbacks by dotted
path, so the plain ``rq worker`` runs them too.
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

from shared import stats
from shared.rqmodel.attempts import attempts

from .alerts import send_alert
from .context import get_settings

logger = logging.getLogger(__name__)


def job_name(job: Job) -> str:
    """The job's display name (``createMemberJob``), falling back to the function name."""
    return str(job.meta.get("name") or job.func_name)


def attempts_made(job: Job) -> int:
    """Attempts made so far, counting the one running now."""
    return max(1, attempts(job, running=True)[0])


def log_active(job: Job) -> None:
    """Log that ``job`` started running."""
    logger.info(
        "job active id=%s name=%s queue=%s attempt=%s/%s",
        job.id,
        job_name(job),
        job.origin,
        attempts_made(job),
        job.meta.get("maxAttempts", 1),
    )


def on_success(job: Job, connection: Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ success callback: log ``completed`` and count it."""
    logger.info("job completed id=%s name=%s queue=%s", job.id, job_name(job), job.origin)
    try:
        stats.record_finished(
            connection,
            job.origin,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
        )
    except RedisError as exc:
        # A lost metric must not turn a finished job into a failed one.
        logger.warning("could not count job %s as finished: %s", job.id, exc)


def on_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    _traceback: TracebackType | None,
    *args: Any,
    **kwargs: Any,
) -> None:
    """RQ failure callback: log every failed attempt; alert after the last one."""
    error = "".join(traceback.format_exception_only(exc_type, exc_value)).strip() if exc_type else "?"
    attempt = attempts_made(job)
    try:
        stats.record_failed(
            connection,
            job.origin,
            will_retry=job.should_retry,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
        )
    except RedisError as exc:
        logger.warning("could not count the failure of job %s: %s", job.id, exc)
    if job.should_retry:
        logger.warning(
            "job failed id=%s name=%s attempt=%s/%s, will retry: %s",
            job.id,
            job_name(job),
            attempt,
            job.meta.get("maxAttempts", 1),
            error,
        )
        return
    logger.error("job failed id=%s name=%s after %s attempts: %s", job.id, job_name(job), attempt, error)
    send_alert(
        get_settings().alert_webhook_url,
        {
            "event": "job.failed",
            "jobId": job.id,
            "name": job_name(job),
            "queue": job.origin,
            "attempts": attempt,
            "error": error,
            "args": list(job.args),
        },
    )


def log_abandoned(job_id: str, queue: str, reason: str) -> None:
    """Log that a job was found abandoned (its worker died) and what was done about it."""
    logger.warning("job abandoned id=%s queue=%s: %s", job_id, queue, reason)
