"""The fast worker's side of RQ's data model: claim arguments, claimed jobs, success arguments.

:data:`~shared.rqmodel.scripts.CLAIM` marks jobs started as RQ's own worker classes'
``prepare_execution`` + ``prepare_job_execution`` would; :data:`~shared.rqmodel.scripts.FINISH`
writes successes as its ``handle_job_success`` would. This module builds their arguments and
turns a claim's reply back into the ``Job`` and ``Execution`` objects RQ's own code paths
(failures, retries, callbacks) take over.
"""

from __future__ import annotations

from base64 import b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.defaults import DEFAULT_WORKER_TTL, UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.results import Result

from shared.rqmodel.dates import format_date, new_hex_id
from shared.rqmodel.keys import RQKeys
from shared.rqmodel.restore import restore
from shared.rqmodel.scripts import CLAIM, FINISH

#: ``Result.Type.SUCCESSFUL.value``, looked up once.
_SUCCESSFUL = Result.Type.SUCCESSFUL.value


@dataclass
class Claim:
    """The command that claims up to ``wanted`` jobs."""

    command: tuple[Any, ...]


def claim(
    keys: RQKeys, queue_keys: list[str], worker_name: str, worker_key: str, wanted: int, spread: bool = False
) -> Claim:
    """The ``EVALSHA`` of the claim script for up to ``wanted`` jobs from ``queue_keys``.

    By default every job comes from the first queue that has one (RQ's default strategy);
    with ``spread`` the queues take turns job by job, as RQ's round robin does across dequeues.
    """
    # The script stamps the jobs with the server's clock (it may run later, behind a wait).
    args = (worker_name, worker_key, "", "", new_hex_id(), DEFAULT_WORKER_TTL, wanted)
    mode = "spread" if spread else "first"
    return Claim(("EVALSHA", CLAIM.sha, len(queue_keys), *queue_keys, *args, keys.rq, mode))


def claimed_any(raw: Any) -> bool:
    """Whether a claim's reply holds a job."""
    return bool(raw[1])


#: One job a claim took: its queue's key, the restored job, its execution, the ttl used.
Claimed = tuple[str, Job, Execution, int]


def claimed_jobs(
    raw: Any, job_class: type[Job], connection: Redis, serializer: Any, worker_name: str
) -> list[Claimed]:
    """The jobs of a claim's reply, restored and marked started as the script marked them."""
    stamp, items = raw
    if not items:
        return []
    started = datetime.fromisoformat(stamp[:-1].decode()).replace(tzinfo=UTC)
    jobs = []
    for item in items:
        queue_key, job_id, exec_id = (part.decode() for part in item[:3])
        # The worker's serializer is resolved already; resolving it again per job costs a
        # Protocol isinstance check.
        job = job_class(job_id, connection=connection)
        job.serializer = serializer
        fields = item[4]
        restore(job, dict(zip(fields[::2], fields[1::2], strict=True)))
        job.worker_name = worker_name
        job.last_heartbeat = job.started_at = started
        # Inside the seam, RQ's private attributes directly (internals.py names them for the rest).
        job._status = JobStatus.STARTED
        execution = Execution(exec_id, job_id, connection, worker_name=worker_name)
        execution.created_at = execution.last_heartbeat = started
        execution._job = job
        jobs.append((queue_key, job, execution, int(item[3])))
    return jobs


def success(job: Job, execution: Execution, worker_name: str, result_ttl: int) -> list[Any]:
    """One job's arguments to the finish script: its writes and its result stream entry."""
    started, ended = job.started_at, job.ended_at
    assert started is not None and ended is not None
    ended_at = repr(ended.timestamp())
    args: list[Any] = [
        job.id,
        execution.id,
        worker_name,
        "1" if job._dependency_ids else "0",  # whether a dependencies set may exist
        job.origin,
        format_date(started),
        format_date(ended),
        ended_at,
        result_ttl,
        repr((ended - started).total_seconds()),
        # The fields of rq.results.Result.serialize() for a successful result.
        "type",
        _SUCCESSFUL,
        "worker_name",
        worker_name,
    ]
    value = job._result
    if value is not None:
        try:
            serialized = job.serializer.dumps(value)
        except Exception:
            serialized = job.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
        args += ["return_value", b64encode(serialized).decode()]
    args += ["execution_id", execution.id, "execution_started_at", repr(execution.created_at.timestamp())]
    args += ["execution_ended_at", ended_at]
    return args


def finish(keys: RQKeys, worker_key: str, successes: list[list[Any]]) -> tuple[Any, ...]:
    """The ``EVALSHA`` of the finish script for ``successes`` (from :func:`success`)."""
    args: list[Any] = [keys.rq]
    for one in successes:
        args.append(len(one))
        args += one
    return ("EVALSHA", FINISH.sha, 1, worker_key, *args)
