"""A PostgreSQL restart under load, consumed by plain ``rq worker`` processes.

The workers are started as RQ's documentation writes the command (``rq worker -c
consumer.settings -S json member``: RQ's own forking worker class, no ``--with-scheduler``), and no
recovery monitor runs: only the producer's background thread runs RQ's scheduler, which moves
the deferred jobs back to the queue. The producer is served two ways: as ``redis-archive serve``
serves it (granian, ``producer.server:served_app``) and by gunicorn with two worker processes
(``producer:create_app()``, where each process starts its thread on its first request). The
private PostgreSQL cluster is stopped for 10 s while members are POSTed; every accepted member
must then be written exactly once, and no job may end failed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
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
#: POSTs per second: below what two forking workers get through on two cores (15 to 20 jobs a
#: second when nothing else runs), so the backlog the outage leaves drains in seconds.
RATE = 12.0
#: Seconds without a member written, while some are not, that mean the rest wait for good: a
#: deferred job is due again within 10 s and moved within a second of that.
STALL_SECONDS = 30.0


def gunicorn_argv(host: str, port: int, workers: int = 2) -> list[str]:
    """The producer under gunicorn's sync workers, started as its documentation writes it."""
    return [
        sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"{host}:{port}",
        "--graceful-timeout", "10", "producer:create_app()",
    ]  # fmt: skip


#: How each server is started on a port: ``redis-archive serve``'s granian, gunicorn.
SERVERS = {
    "serve": lambda port: producer_argv("127.0.0.1", port, 1),
    "gunicorn": lambda port: gunicorn_argv("127.0.0.1", port, 2),
}


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


def _unwritten(url: str, accepted: list[str]) -> set[str]:
    """Wait while members are being written; the accepted members still not written when none is."""
    missing = set(accepted) - set(_rows(url))
    progress_at = time.monotonic()
    while missing and time.monotonic() - progress_at < STALL_SECONDS:
        time.sleep(1.0)
        still = missing - set(_rows(url))
        if len(still) < len(missing):
            progress_at = time.monotonic()
        missing = still
    return missing


def _scheduler_pids(r: redis.Redis) -> set[int]:
    """The processes whose share of RQ's scheduler has registered as a producer's."""
    return {int(r.hget(key, "pid") or 0) for key in r.scan_iter("rq:scheduler:producer-*")}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_postgres_restart_under_load_writes_every_member_once(
    server: str, redis_proc: RedisProc, r: redis.Redis, postgres: PrivatePostgres, tmp_path: Path
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
            SERVERS[server](port), env=env, stdout=logs["producer"], stderr=logs["producer"], cwd=str(ROOT)
        ),
        *(
            procs.spawn(
                plain_worker_argv(("member",)), env=env, stdout=logs[n], stderr=logs[n], cwd=str(ROOT)
            )
            for n in ("rq-1", "rq-2")
        ),
    ]
    producer, workers = children[0], children[1:]
    client: Client | None = None
    try:
        assert procs.wait_until(lambda: procs.port_open("127.0.0.1", port), 60), "the producer did not start"
        assert procs.wait_until(lambda: r.scard("rq:workers") == 2, 60), "the workers did not start"
        assert "--with-scheduler" not in " ".join(plain_worker_argv(("member",)))
        client = Client(port, RATE)
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
        assert len(during) > RATE * OUTAGE_SECONDS / 2, "the outage did not overlap the load"

        # However slowly the machine lets the workers go, they must not stop short of the last.
        drain_started = time.monotonic()
        unwritten = _unwritten(postgres.url, accepted)
        assert not unwritten, (
            f"{len(unwritten)} of {len(accepted)} members not written, none for {STALL_SECONDS:.0f}s"
        )
        print(
            f"{server}: accepted {len(accepted)}, written {len(set(accepted) & set(_rows(postgres.url)))}, "
            f"all {time.monotonic() - drain_started:.1f}s after the load"
        )
        rows = _rows(postgres.url)
        # No monitor and no --with-scheduler: the producer's processes moved the deferred jobs.
        holder = r.get("rq:scheduler-lock:member") or b""
        movers = _scheduler_pids(r)
        served_by = {child.pid for child in psutil.Process(producer.pid).children(recursive=True)}
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
    # Each process that ran the scheduler share is one the server forked to serve, not its master.
    assert holder.startswith(b"producer-"), holder
    assert movers and movers <= served_by and producer.pid not in movers, (movers, served_by)
    # The outage hit jobs: they were deferred without spending attempts, and none was alerted.
    assert worker_logs.count("job deferred") >= 10, worker_logs[-3000:]
    assert "ALERT" not in worker_logs and "will retry" not in worker_logs
