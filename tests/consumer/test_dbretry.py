"""A job whose database is unreachable tries again later without spending its attempts."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from consumer import context
from consumer.dbretry import SINCE_FIELD, backoff
from consumer.worker import FastWorker
from shared.constants import MEMBER_QUEUE
from shared.db import init_db, is_transient, make_engine, member
from shared.scheduler import ScheduledJobMover
from shared.stack.procs import free_port

WORKERS = {
    "rq-SimpleWorker": lambda q, r: SimpleWorker([q], connection=r, serializer=JSONSerializer),
    "rq-Worker": lambda q, r: Worker([q], connection=r, serializer=JSONSerializer),
    "FastWorker": lambda q, r: FastWorker([q], connection=r, serializer=JSONSerializer),
}


def _error(url: str, statement: str | None = None) -> SQLAlchemyError:
    engine = make_engine(url, pool_pre_ping=False) if not url.startswith("sqlite") else make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement or "SELECT 1"))
    except SQLAlchemyError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{statement!r} on {url} did not fail")


def test_unreachable_servers_are_transient_and_the_jobs_own_errors_are_not(
    postgres_url: str, mysql_url: str, db_url: str
) -> None:
    assert is_transient(_error(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"))
    assert is_transient(_error(f"mysql+pymysql://root@127.0.0.1:{free_port()}/x"))
    assert not is_transient(_error(postgres_url, "SELECT * FROM no_such_table"))
    assert not is_transient(_error(postgres_url, "SELECT 1/0"))
    # MySQL reports an unknown column as an OperationalError (1054): still the job's error.
    assert not is_transient(_error(mysql_url, "SELECT no_such_column FROM DUAL"))
    assert not is_transient(_error(db_url, "SELECT * FROM no_such_table"))
    init_db(make_engine(db_url))
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(member).values(name="a", age=1, job_id="j"))
    assert not is_transient(_error(db_url, "INSERT INTO member (name, age, job_id) VALUES ('b', 1, 'j')"))


def test_a_locked_sqlite_file_is_transient(db_url: str) -> None:
    init_db(make_engine(db_url))
    holder = make_engine(db_url)
    impatient = make_engine(db_url, connect_args={"timeout": 0})
    with holder.connect() as conn:
        conn.execute(text("BEGIN IMMEDIATE"))
        try:
            with impatient.connect() as other:
                other.execute(text("PRAGMA busy_timeout=0"))
                with pytest.raises(SQLAlchemyError) as caught:
                    other.execute(text("INSERT INTO member (name, age, job_id) VALUES ('b', 1, 'k')"))
        finally:
            conn.execute(text("ROLLBACK"))
    holder.dispose()
    impatient.dispose()
    assert is_transient(caught.value)


def test_backoff_doubles_to_ten_seconds() -> None:
    assert [backoff(n) for n in range(7)] == [1, 2, 4, 8, 10, 10, 10]


def _use_database(worker_env: pytest.MonkeyPatch, url: str, retry_seconds: float = 300) -> None:
    worker_env.setenv("DATABASE_URL", url)
    worker_env.setenv("DB_RETRY_SECONDS", str(retry_seconds))
    context.get_settings.cache_clear()
    context.dispose_engines()


def _enqueue(r: redis.Redis, client: Any) -> Job:
    job_id = client.post("/queue/members", json={"name": "Kim", "age": 30}).get_json()["jobId"]
    return Job.fetch(job_id, connection=r, serializer=JSONSerializer)


@pytest.mark.parametrize("worker", list(WORKERS))
def test_an_unreachable_database_defers_the_job_without_spending_an_attempt(
    worker: str, r: redis.Redis, client: Any, worker_env: pytest.MonkeyPatch, db_url: str
) -> None:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    _use_database(worker_env, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")
    job = _enqueue(r, client)
    WORKERS[worker](queue, r).work(burst=True)

    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.retries_left == 2, "the outage spent an attempt"
    assert isinstance(job.meta.get(SINCE_FIELD), float)
    assert queue.failed_job_registry.get_job_ids() == []
    info = client.get(f"/jobs/{job.id}").get_json()
    assert info["attempts"] == 0 and info["status"] == "scheduled"  # no attempt spent

    # The database is back (here: the job's settings now name a reachable one); the
    # scheduler moves the retry back once it is due, and the job writes its row once.
    _use_database(worker_env, db_url)
    score = r.zscore(queue.scheduled_job_registry.key, job.id)
    assert score is not None
    r.zadd(queue.scheduled_job_registry.key, {job.id: 0})  # due now rather than in a second
    mover = ScheduledJobMover(r, [MEMBER_QUEUE])
    try:
        mover.tick()
    finally:
        mover.close()
    WORKERS[worker](queue, r).work(burst=True)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert SINCE_FIELD not in job.meta
    assert job.retries_left == 2
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(member.c.job_id)).scalars().all()
    engine.dispose()
    assert rows == [job.id]


def test_past_db_retry_seconds_the_outage_counts_as_an_attempt(
    r: redis.Redis, client: Any, worker_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    _use_database(worker_env, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone", retry_seconds=0)
    job = _enqueue(r, client)
    with caplog.at_level("WARNING"):
        SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    job.refresh()
    assert job.retries_left == 1
    assert job.get_status() == JobStatus.SCHEDULED  # RQ's own retry, after RETRY_INTERVALS
    lines = [rec.getMessage() for rec in caplog.records]
    assert any("a failed attempt" in line for line in lines)
    assert any("will retry" in line and "OperationalError" in line for line in lines)


def test_the_jobs_own_error_still_spends_attempts(
    r: redis.Redis, client: Any, worker_env: pytest.MonkeyPatch, db_url: str
) -> None:
    engine = make_engine(db_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER no_kims BEFORE INSERT ON member WHEN NEW.name = 'Kim' "
                "BEGIN SELECT RAISE(ABORT, 'no Kims'); END"
            )
        )
    engine.dispose()
    _use_database(worker_env, db_url)
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    job = _enqueue(r, client)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    job.refresh()
    assert job.retries_left == 1
    assert SINCE_FIELD not in job.meta
