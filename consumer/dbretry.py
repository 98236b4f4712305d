"""Jobs that wait out a database outage without spending the attempts meant for their own errors.

A job that cannot reach its database (refused, restarting, failing over, a dropped connection,
a lock wait timeout, a deadlock: :func:`shared.db.is_transient`) returns an RQ ``Retry``
instead of raising: RQ schedules it again after a backoff (1, 2, 4, 8, then every 10 seconds)
and leaves ``retries_left``, the attempts of ``JOB_ATTEMPTS``, alone. The first such error
is noted in the job's meta; once the database has been unreachable for ``DB_RETRY_SECONDS``
the error is raised like any other, and the job spends its attempts (and alerts after the
last one). Constraint violations and bad data raise at once.

The scheduled retry is moved back to its queue by RQ's scheduler, which the recovery monitor
and the producer run (:mod:`shared.scheduler`), so plain ``rq worker`` processes started
without ``--with-scheduler`` see it too.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from rq import Retry, get_current_job
from rq.job import Job
from sqlalchemy.exc import SQLAlchemyError

from shared.backoff import Backoff
from shared.db import is_transient

from .context import get_settings
from .events import job_name

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The job's meta field holding when (Unix seconds) its database was first found unreachable.
SINCE_FIELD = "dbUnavailableSince"
#: Seconds between tries while the database is away: 1, 2, 4, 8, then every 10 (whole seconds,
#: as RQ's ``Retry`` intervals are).
BACKOFF = Backoff(first=1, cap=10)


def backoff(tries: int) -> int:
    """Seconds before try ``tries + 1`` of a database that was unreachable ``tries`` times."""
    return int(BACKOFF.delay(tries + 1))


def rides_out_database(func: F) -> F:
    """Decorate a job function: a transient database error schedules the job again (see above)."""

    @functools.wraps(func)
    def job_function(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            job = get_current_job()
            if job is None:
                raise
            return retry_later(job, exc)
        job = get_current_job()
        if job is not None and SINCE_FIELD in job.meta:
            # Reached the database again: a later outage gets its own DB_RETRY_SECONDS.
            del job.meta[SINCE_FIELD]
            job.save_meta()
        return result

    return cast(F, job_function)


def retry_later(job: Job, error: SQLAlchemyError) -> Retry:
    """The ``Retry`` a job returns when its database is unreachable; re-raises ``error`` past the horizon."""
    horizon = get_settings().db_retry_seconds
    now = time.time()
    since = float(job.meta.setdefault(SINCE_FIELD, now))
    waited = now - since
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if waited >= horizon:
        logger.error(
            "job %s (%s): database unreachable for %.0fs (DB_RETRY_SECONDS=%g); a failed attempt: %s",
            job.id,
            job_name(job),
            waited,
            horizon,
            reason,
        )
        raise error
    tries = job.number_of_retries or 0
    delay = max(1, min(backoff(tries), math.ceil(horizon - waited)))
    logger.warning(
        "job deferred id=%s name=%s queue=%s: database unreachable (%s: %s); trying again in %ss, "
        "not counted as an attempt (%.0fs of DB_RETRY_SECONDS=%g)",
        job.id,
        job_name(job),
        job.origin,
        type(error).__name__,
        reason,
        delay,
        waited,
        horizon,
    )
    # RQ fails a job whose returned Retry is used up: this one always has a try left, the
    # horizon above is what ends it.
    return Retry(max=tries + 1, interval=delay)
