"""``redis-archive jobs failed`` and ``jobs requeue``: re-driving failed jobs after an outage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from click.testing import CliRunner
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.cli.main import main
from shared.redrive import error_type, parse_since
from tests.servers import RedisProc


def _fail_jobs(r: redis.Redis, worker_env: pytest.MonkeyPatch) -> tuple[list[Job], Job]:
    """Three jobs failed by a ValueError, one by a TypeError."""
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    retry = {"retry": Retry(max=2, interval=0), "meta": {"name": "t", "maxAttempts": 3}}
    value_errors = [queue.enqueue("tests.parity_jobs.fail", f"bad {i}", **retry) for i in range(3)]
    missing = queue.enqueue("tests.parity_jobs.add", "a", 1, meta={"maxAttempts": 1})
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    for job in [*value_errors, missing]:
        assert job.get_status(refresh=True) == JobStatus.FAILED
    return value_errors, missing


def _run(redis_proc: RedisProc, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--redis-url", redis_proc.url, "jobs", *args])
    return result.exit_code, result.output


def test_requeue_by_error_type_restores_attempts(
    redis_proc: RedisProc, r: redis.Redis, worker_env: pytest.MonkeyPatch
) -> None:
    value_errors, missing = _fail_jobs(r, worker_env)
    code, out = _run(redis_proc, "failed", "--queue", "member", "--json")
    assert code == 0, out
    listed = json.loads(out)["jobs"]
    assert {job["id"] for job in listed} == {job.id for job in [*value_errors, missing]}
    assert {job["errorType"] for job in listed if job["id"] != missing.id} == {"ValueError"}
    assert [job["errorType"] for job in listed if job["id"] == missing.id] == ["TypeError"]

    code, out = _run(redis_proc, "requeue", "--queue", "member", "--error-type", "ValueError", "--dry-run")
    assert code == 0 and "3 failed job(s) on member would be requeued" in out
    assert all(job.get_status(refresh=True) == JobStatus.FAILED for job in value_errors)

    code, out = _run(redis_proc, "requeue", "--queue", "member", "--error-type", "ValueError")
    assert code == 0, out
    assert "requeued 3 of 3 matching failed job(s) on member" in out
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    assert sorted(queue.job_ids) == sorted(job.id for job in value_errors)
    for job in value_errors:
        job.refresh()
        assert job.get_status() == JobStatus.QUEUED
        assert job.retries_left == 2  # the producer's 3 attempts, again
    assert missing.get_status(refresh=True) == JobStatus.FAILED
    assert queue.failed_job_registry.get_job_ids() == [missing.id]


def test_requeue_since_selects_by_failure_time(
    redis_proc: RedisProc, r: redis.Redis, worker_env: pytest.MonkeyPatch
) -> None:
    value_errors, missing = _fail_jobs(r, worker_env)
    old = value_errors[0]
    old.ended_at = datetime.now(UTC) - timedelta(hours=3)
    old.save()
    code, out = _run(redis_proc, "requeue", "--queue", "member", "--since", "1h", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert set(report["requeued"]) == {value_errors[1].id, value_errors[2].id, missing.id}
    assert old.get_status(refresh=True) == JobStatus.FAILED
    # Already requeued: a second run finds nothing left to do.
    code, out = _run(redis_proc, "requeue", "--queue", "member", "--since", "1h")
    assert code == 0 and "requeued 0 of 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["requeue", "--queue", "nope"], "Invalid value for '--queue'"),
        (["requeue", "--queue", "member", "--since", "yesterday"], "expected a duration"),
        (["requeue"], "Missing option '--queue'"),
        (["requeue", "--queue", "member", "--since", "-5m"], "expected a duration"),
    ],
)
def test_bad_input_is_a_message_and_a_non_zero_exit(
    redis_proc: RedisProc, args: list[str], message: str
) -> None:
    code, out = _run(redis_proc, *args)
    assert code == 2
    assert message in out and "Traceback" not in out


def test_unreachable_redis_is_a_message_and_exit_1() -> None:
    result = CliRunner().invoke(
        main, ["--redis-url", "redis://127.0.0.1:1/0", "jobs", "requeue", "--queue", "member"]
    )
    assert result.exit_code == 1
    assert "Error: Redis is unreachable" in result.output


def test_since_and_error_type_parsing() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-01-01T00:00:00", now) == datetime(2026, 1, 1, tzinfo=UTC)
    trace = (
        "Traceback (most recent call last):\n  ...\nsqlalchemy.exc.OperationalError: (psycopg...) refused\n"
    )
    assert error_type(trace) == "sqlalchemy.exc.OperationalError"
    assert error_type("Worker w died running it (AbandonedJobError)") == "AbandonedJobError"
    assert error_type("") is None
