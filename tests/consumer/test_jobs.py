"""createMemberJob against SQLite, PostgreSQL and MariaDB: one row per job, retries, alerts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import func, select, text

from consumer import context
from shared.constants import MEMBER_QUEUE
from shared.db import make_engine, member
from shared.settings import Settings
from tests.servers import close_app


def run_burst(r: redis.Redis) -> None:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)


def count_rows(url: str, job_id: str | None = None) -> int:
    engine = make_engine(url)
    stmt = select(func.count()).select_from(member)
    if job_id is not None:
        stmt = stmt.where(member.c.job_id == job_id)
    with engine.connect() as conn:
        value = conn.execute(stmt).scalar_one()
    engine.dispose()
    return int(value)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def any_db_url(request: pytest.FixtureRequest, db_url: str) -> str:
    if request.param == "sqlite":
        return db_url
    url: str = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mysql_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS member"))
    engine.dispose()
    return url


@pytest.fixture
def db_app(any_db_url: str, settings: Settings, worker_env: pytest.MonkeyPatch) -> Iterator[Any]:
    from producer import create_app

    worker_env.setenv("DATABASE_URL", any_db_url)
    context.get_settings.cache_clear()
    app = create_app(asdict(settings.with_overrides(database_url=any_db_url)))
    yield app
    close_app(app)


def test_member_written_once_in_each_database(db_app: Any, any_db_url: str, r: redis.Redis) -> None:
    client = db_app.test_client()
    job_id = client.post(
        "/queue/members", json={"name": "한글 이름", "age": 42, "email": "a@b.co"}
    ).get_json()["jobId"]
    run_burst(r)
    info = client.get(f"/jobs/{job_id}").get_json()
    assert info["status"] == "finished"
    assert info["attempts"] == 1
    assert info["result"]["name"] == "한글 이름"
    members = client.get(f"/members?job_id={job_id}").get_json()["members"]
    assert len(members) == 1
    assert members[0]["age"] == 42 and members[0]["email"] == "a@b.co"
    assert client.get(f"/members/{members[0]['member_id']}").get_json()["name"] == "한글 이름"

    # A re-run of the same job (a retry, or a crashed worker's job run again) writes no second row.
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer).enqueue_job(job)
    run_burst(r)
    assert count_rows(any_db_url, job_id) == 1
    assert count_rows(any_db_url) == 1


def test_failing_job_is_tried_three_times_then_alerts(
    client: FlaskClient, r: redis.Redis, settings: Settings, worker_env: pytest.MonkeyPatch, webhook: Any
) -> None:
    # The database rejects this row: a trigger aborts inserts of the name "reject".
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER no_rejects BEFORE INSERT ON member WHEN NEW.name = 'reject' "
                "BEGIN SELECT RAISE(ABORT, 'member rejected by database'); END"
            )
        )
    worker_env.setenv("ALERT_WEBHOOK_URL", webhook.url)
    context.get_settings.cache_clear()
    app = client.application
    app.extensions["redis_archive"].settings = settings.with_overrides(retry_intervals=(0,))
    job_id = client.post("/queue/members", json={"name": "reject", "age": 1}).get_json()["jobId"]
    ok_id = client.post("/queue/members", json={"name": "fine", "age": 1}).get_json()["jobId"]

    run_burst(r)

    info = client.get(f"/jobs/{job_id}").get_json()
    assert info["status"] == "failed"
    assert info["attempts"] == 3
    assert info["maxAttempts"] == 3
    assert "member rejected by database" in info["error"]
    assert client.get(f"/jobs/{ok_id}").get_json()["status"] == "finished"
    assert len(webhook.received) == 1
    alert = webhook.received[0]
    assert alert["jobId"] == job_id
    assert alert["attempts"] == 3
    assert alert["name"] == "createMemberJob"
    assert "member rejected" in str(alert["error"])
    assert count_rows(settings.database_url) == 1


def test_failure_without_webhook_still_logs_error(
    client: FlaskClient, r: redis.Redis, settings: Settings, worker_env: pytest.MonkeyPatch, caplog: Any
) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE member"))
        conn.execute(text("CREATE TABLE member (member_id INTEGER PRIMARY KEY, name TEXT CHECK (0))"))
    client.application.extensions["redis_archive"].settings = settings.with_overrides(
        retry_intervals=(0,), job_attempts=2
    )
    job_id = client.post("/queue/members", json={"name": "x", "age": 1}).get_json()["jobId"]
    with caplog.at_level("INFO"):
        run_burst(r)
    assert Job.fetch(job_id, connection=r, serializer=JSONSerializer).get_status() == JobStatus.FAILED
    alerts = [rec for rec in caplog.records if rec.levelname == "ERROR" and "ALERT" in rec.getMessage()]
    assert len(alerts) == 1 and job_id in alerts[0].getMessage()
    events = " ".join(rec.getMessage() for rec in caplog.records)
    assert "job active" in events
    assert "will retry" in events


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_init_db_survives_concurrent_creators(tmp_path: Any, backend: str) -> None:
    """Twelve processes creating the tables at once (server processes, rq workers and the
    monitor starting together) all succeed on the first try: creation runs under one lock per
    database, not on retries that a dozen racers can use up."""
    import multiprocessing

    from tests.servers import MYSQL_ADMIN_URL, PG_ADMIN_URL, fresh_database

    def race(url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(6) as pool:
            results = pool.map(_create_tables, [url] * 12)
        assert results == [True] * 12
        assert count_rows(url) == 0

    if backend == "sqlite":
        race(f"sqlite:///{tmp_path / 'race.db'}")
        return
    with fresh_database(PG_ADMIN_URL if backend == "postgresql" else MYSQL_ADMIN_URL) as url:
        race(url)


def _create_tables(url: str) -> bool:
    from shared.db import init_db

    engine = make_engine(url)
    try:
        init_db(engine, attempts=1)
        return True
    finally:
        engine.dispose()
