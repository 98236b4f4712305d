"""``GET /jobs/<id>``: a job's status, timestamps, attempts, result or error."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from shared.rqmodel.attempts import attempts

from .exceptions import ResourceNotFound
from .openapi import operation
from .schemas import JobInfo
from .state import get_state

bp = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Timeout|Interrupt)\b.*")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def attempts_of(job: Job, status: JobStatus) -> tuple[int, int]:
    """(attempts made so far, attempts allowed) from the job's retry counter."""
    running = status in (JobStatus.STARTED, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
    return attempts(job, running=running)


def error_summary(job: Job) -> str | None:
    """The last line of the latest failure's traceback."""
    result = job.latest_result()
    if result is None or result.type != Result.Type.FAILED or not result.exc_string:
        return None
    lines = [line for line in result.exc_string.strip().splitlines() if line.strip()]
    # The exception line is the last unindented "module.Error: message" line; some
    # libraries (SQLAlchemy) print hints after it.
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else None


#: What reading a job's data, meta or result raises when another serializer wrote it (plain RQ's
#: default, pickle): the producer reads JSON only and never unpickles what it finds in Redis.
UNREADABLE = (DeserializationError, ValueError)


def job_name(job: Job) -> str:
    """The job's name: its ``meta`` name, else its function, else (data not JSON) its description."""
    name = job.meta.get("name")
    if name:
        return str(name)
    try:
        return job.func_name
    except UNREADABLE:
        return job.description or ""


def readable_result(job: Job) -> Any:
    """The job's return value, or ``None`` when it has none or it was not stored as JSON."""
    try:
        return job.return_value()
    except UNREADABLE:
        return None


def job_json(job: Job) -> dict[str, Any]:
    """The public view of ``job``."""
    status = job.get_status(refresh=False)
    attempts, max_attempts = attempts_of(job, status)
    result = readable_result(job) if status == JobStatus.FINISHED else None
    return {
        "id": job.id,
        "name": job_name(job),
        "queue": job.origin,
        "status": status.value,
        "createdAt": _iso(job.created_at),
        "enqueuedAt": _iso(job.enqueued_at),
        "startedAt": _iso(job.started_at),
        "endedAt": _iso(job.ended_at),
        "attempts": attempts,
        "maxAttempts": max_attempts,
        "result": result,
        "error": error_summary(job) if status in (JobStatus.FAILED, JobStatus.STOPPED) else None,
    }


@bp.get("/jobs/<job_id>")
@operation("A job's status", responses={200: JobInfo, 404: None, 503: None}, tags=("jobs",))
def get_job(job_id: str) -> dict[str, Any]:
    if not JOB_ID.match(job_id):
        raise ResourceNotFound(f"job {job_id!r} not found")
    return job_json(find_job(job_id))


def find_job(job_id: str) -> Job:
    """The job ``job_id`` in whichever namespace holds it (one Redis read per namespace at most)."""
    spaces = get_state().all_spaces()
    for space in spaces:
        if len(spaces) > 1 and not space.client.exists(space.keys.job(job_id)):
            continue
        try:
            return space.job_class.fetch(job_id, connection=space.client, serializer=JSONSerializer)
        except NoSuchJobError:
            break
    raise ResourceNotFound(f"job {job_id!r} not found")
