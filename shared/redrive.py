"""Re-driving failed jobs: find them in a queue's failed registry by age and error, put them back.

After an outage longer than the jobs could wait (``DB_RETRY_SECONDS``, ``WORKER_MASTER_TIMEOUT``)
some jobs end failed. ``redis-archive jobs requeue --queue member --since 1h --error-type
OperationalError`` (and the dashboard's requeue) puts them back in their queue with their
attempts restored (``maxAttempts`` from the job's meta); jobs are idempotent, so a job whose
effect was written after all writes nothing twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.exceptions import ConfigurationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: ``module.ErrorType: message`` or ``ErrorType`` at the start of a traceback's last line.
_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
#: An exception's name anywhere in a message (``... (AbandonedJobError)``).
_NAMED = re.compile(r"\b([A-Z]\w*(?:Error|Exception))\b")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A point in time from ``30s``, ``10m``, ``2h``, ``1d`` (ago) or an ISO 8601 time (UTC if naive)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since: expected a duration (30s, 10m, 2h, 1d) or an ISO 8601 time, got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def error_type(exc_string: str | None) -> str | None:
    """The exception's (dotted) class name in a failed job's error text, if one can be found."""
    if not exc_string:
        return None
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    if lines:
        match = _LAST_LINE.match(lines[-1].strip())
        if match and ("Error" in match.group(1) or "Exception" in match.group(1) or "." in match.group(1)):
            return match.group(1)
    named = _NAMED.findall(exc_string)
    return named[-1] if named else None


def type_matches(found: str | None, wanted: str) -> bool:
    """Whether ``found`` (``sqlalchemy.exc.OperationalError``) is ``wanted`` (dotted, or its last part)."""
    if found is None:
        return False
    return found == wanted or found.rsplit(".", 1)[-1] == wanted


@dataclass(frozen=True)
class FailedJob:
    """A job of a failed registry, as the re-drive sees it."""

    id: str
    failed_at: datetime | None
    error_type: str | None
    error: str


@dataclass
class Redrive:
    """What a re-drive found and did."""

    queue: str
    matched: list[FailedJob] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    #: Jobs that vanished or left the registry meanwhile (id, why).
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _describe(job: Job) -> FailedJob:
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    failed_at = job.ended_at or (result.created_at if result is not None else None)
    if failed_at is not None and failed_at.tzinfo is None:
        failed_at = failed_at.replace(tzinfo=UTC)
    last = text.strip().splitlines()[-1].strip() if text.strip() else ""
    return FailedJob(job.id, failed_at, error_type(text), last)


def failed_jobs(
    connection: Redis, queue_name: str, *, since: datetime | None = None, error: str | None = None
) -> list[FailedJob]:
    """The failed jobs of ``queue_name`` that failed at or after ``since`` with an error of type ``error``."""
    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    ids = queue.failed_job_registry.get_job_ids(cleanup=False)
    found = []
    for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
        if job is None:
            continue
        described = _describe(job)
        if since is not None and (described.failed_at is None or described.failed_at < since):
            continue
        if error is not None and not type_matches(described.error_type, error):
            continue
        found.append(described)
    return found


def requeue(connection: Redis, job_id: str, *, restore_attempts: bool = True) -> Job:
    """Put one failed job back at the end of its queue, with its attempts restored.

    Raises ``NoSuchJobError`` for an unknown id and ``InvalidJobOperation`` for a job that is not
    in its failed registry (any more).
    """
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    max_attempts = int(job.meta.get("maxAttempts", 0) or 0)
    if restore_attempts and max_attempts > 1 and job.retry_intervals is not None:
        # The requeue saves the job, this too: it gets the retries the producer gave it.
        job.retries_left = max_attempts - 1
    return job.requeue()


def requeue_failed(
    connection: Redis,
    queue_name: str,
    *,
    since: datetime | None = None,
    error: str | None = None,
    dry_run: bool = False,
    restore_attempts: bool = True,
) -> Redrive:
    """Requeue the failed jobs :func:`failed_jobs` selects (only list them with ``dry_run``)."""
    report = Redrive(queue_name, failed_jobs(connection, queue_name, since=since, error=error))
    if dry_run:
        return report
    for failed in report.matched:
        try:
            requeue(connection, failed.id, restore_attempts=restore_attempts)
        except NoSuchJobError:
            report.skipped.append((failed.id, "the job expired"))
        except InvalidJobOperation:
            report.skipped.append((failed.id, "no longer in the failed registry"))
        else:
            report.requeued.append(failed.id)
    return report
