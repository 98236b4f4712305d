"""A PostgreSQL restart under load, consumed by plain ``rq worker`` processes.

The workers are started as RQ's documentation writes the command (``rq worker -c
consumer.settings -S json member``: the stock forking worker, no ``--with-scheduler``); the
producer, served as ``redis-archive serve`` serves it, runs RQ's scheduler in its background
thread. The private PostgreSQL cluster is stopped for 10 s while members are POSTed; every
accepted member must then be written exactly once, and no job may end failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import select

from shared.db import init_db, make_engine, member
from shared.stack import procs
from shared.stack.local import plain_worker_argv, producer_argv
from tests.dbservers import PrivatePostgres, postgres_available
from tests.load import Client
from tests.servers import ROOT, RedisProc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not postgres_available(), reason="needs PostgreSQL's initdb and pg_ctl"),
]

OUTAGE_SECONDS = 10.0


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()


def _rows(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(member.c.job_id)).scalars())
    finally:
        engine.dispose()


def test_postgres_restart_under_load_writes_every_member_once(
    redis_proc: RedisProc, r: redis.Redis, postgres: PrivatePostgres, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        REDIS_URL=redis_proc.url,
        DATABASE_URL=postgres.url,
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
        MEMORY_SAMPLE_SECONDS="0",
    )
    for var in ("REDIS_SENTINELS", "DB_RETRY_SECONDS", "ALERT_WEBHOOK_URL"):
        env.pop(var, None)
    engine = make_engine(postgres.url)
    init_db(engine)  # once, before the processes race to create the table
    engine.dispose()
    port = procs.free_port()
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("producer", "rq-1", "rq-2")}  # noqa: SIM115
    children = [
        procs.spawn(
            producer_argv("127.0.0.1", port, 1), env=env, stdout=logs["producer"], stderr=logs["producer"]
        ),
        *(
            procs.spawn(
                plain_worker_argv(("member",)), env=env, stdout=logs[n], stderr=logs[n], cwd=str(ROOT)
            )
            for n in ("rq-1", "rq-2")
        ),
    ]
    workers = children[1:]
    client: Client | None = None
    try:
        assert procs.wait_until(lambda: procs.port_open("127.0.0.1", port), 60), "the producer did not start"
        assert procs.wait_until(lambda: r.scard("rq:workers") == 2, 60), "the workers did not start"
        assert "--with-scheduler" not in " ".join(plain_worker_argv(("member",)))
        client = Client(port, 30.0)
        client.start()
        assert procs.wait_until(lambda: len(_rows(postgres.url)) >= 20, 60), (
            "no member written before the outage"
        )
        stopped_at = time.monotonic()
        postgres.stop("fast")
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        postgres.start()
        restarted_at = time.monotonic()
        time.sleep(5.0)  # more load after the restart
        client.stopping.set()
        client.join(30)
        accepted = [p.job_id for p in client.posts if p.status == 202 and p.job_id]
        assert all(p.status == 202 for p in client.posts), {p.status for p in client.posts}
        during = [p for p in client.posts if stopped_at <= p.sent < restarted_at]
        assert len(during) > 100, "the outage did not overlap the load"

        def all_written() -> bool:
            return set(accepted) <= set(_rows(postgres.url))

        drain_started = time.monotonic()
        assert procs.wait_until(all_written, 180, interval=1.0), (
            f"{len(set(accepted) - set(_rows(postgres.url)))} of {len(accepted)} members not written"
        )
        print(f"accepted {len(accepted)}, all written {time.monotonic() - drain_started:.1f}s after the load")
        rows = _rows(postgres.url)
        jobs = Job.fetch_many(accepted, connection=r, serializer=JSONSerializer)
        statuses = {job.get_status(refresh=False) for job in jobs if job is not None}
        failed = Queue("member", connection=r, serializer=JSONSerializer).failed_job_registry.get_job_ids()
        alive = [proc.poll() is None for proc in workers]
    finally:
        if client is not None:
            client.stopping.set()
        for proc in children:
            procs.stop(proc, timeout=20)
        for log in logs.values():
            log.close()
    worker_logs = "".join((tmp_path / f"{n}.log").read_text(errors="replace") for n in ("rq-1", "rq-2"))
    assert sorted(rows) == sorted(accepted), "a member was written twice or one not asked for"
    assert failed == [] and statuses == {JobStatus.FINISHED}, (statuses, failed[:5])
    assert all(alive), worker_logs[-3000:]
    # The outage hit jobs: they were deferred without spending attempts, and none was alerted.
    assert worker_logs.count("job deferred") >= 10, worker_logs[-3000:]
    assert "ALERT" not in worker_logs and "will retry" not in worker_logs
