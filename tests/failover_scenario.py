"""The failover scenario shared by the failover test and ``bench/failover.py``.

Real processes: a master, two replicas and three Sentinels (``shared.stack.sentinel``), the producer
under gunicorn, two workers of the default class (``consumer.worker.FastWorker``, which
includes :mod:`consumer.worker.faults`). A client
POSTs member jobs at a steady rate; the master is SIGKILLed mid-run; every 202 ``jobId`` is
recorded and checked against the new master and the database afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from rq.job import Job, JobStatus
from sqlalchemy import select

from shared.connections import close_redis, get_redis
from shared.db import init_db, make_engine, member
from shared.settings import Settings
from shared.stack import procs
from shared.stack.local import producer_argv, worker_argv
from shared.stack.sentinel import HaCluster

from .load import Client, Post
from .servers import REDIS_SERVER

WORKER_CLASS = "consumer.worker.FastWorker"
#: A worker's line for a job it put back after a failover (the job then runs again).
_PUT_BACK = re.compile(r"job ([0-9a-f-]+) put back")
_JOB_LINE = re.compile(r"job active|job completed|createMemberJob|Job OK|result is kept|Successfully")


@dataclass
class FailoverResult:
    """What one run of the scenario observed."""

    durable: bool
    posts: list[Post]
    killed_at: float
    acknowledged: list[str]
    finished: set[str]
    lost: list[str]
    stranded: list[str]
    processed_twice: list[str]
    workers_alive: list[bool]
    workers_after: dict[str, int]
    worker_names: list[str]
    drain_seconds: float
    #: ``+switch-master`` events one Sentinel logged (1 unless a spurious second failover).
    failovers: int
    directory: Path
    logs: dict[str, str] = field(default_factory=dict)

    def diagnostics(self) -> str:
        """The summary plus each worker's log lines other than per-job ones (for failed asserts)."""
        parts = [self.summary()]
        for name in self.worker_names:
            lines = [line for line in self.logs.get(name, "").splitlines() if not _JOB_LINE.search(line)]
            parts.append(f"--- {name}\n" + "\n".join(lines[-40:]))
        return "\n".join(parts)

    @property
    def resume_seconds(self) -> float | None:
        """Kill to the first 202 for a request sent after the kill."""
        after = [p.done for p in self.posts if p.status == 202 and p.sent >= self.killed_at]
        return min(after) - self.killed_at if after else None

    @property
    def refused(self) -> int:
        return sum(1 for p in self.posts if p.status == 503)

    @property
    def failed_requests(self) -> int:
        """Requests answered with neither 202 nor 503 (or not answered at all)."""
        return sum(1 for p in self.posts if p.status not in (202, 503))

    def summary(self) -> str:
        """One line with the figures the bench prints."""
        resume = f"{self.resume_seconds:.2f}s" if self.resume_seconds is not None else "never"
        return (
            f"durable={'on' if self.durable else 'off'}: kill->first enqueue {resume}, "
            f"acknowledged {len(self.acknowledged)}, lost {len(self.lost)}, "
            f"processed twice {len(self.processed_twice)}, refused (503) {self.refused}, "
            f"stranded {len(self.stranded)}, failovers {self.failovers}, "
            f"workers alive {sum(self.workers_alive)}/{len(self.workers_alive)} ({self.directory})"
        )


def _job_states(redis: Redis, job_ids: list[str]) -> dict[str, str | None]:
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        replies = pipe.execute()
    return {job_id: (s.decode() if s else None) for job_id, s in zip(job_ids, replies, strict=True)}


def _rows(db_url: str, job_ids: list[str]) -> set[str]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {row.job_id for row in conn.execute(select(member.c.job_id))} & set(job_ids)
    finally:
        engine.dispose()


def run_failover(
    directory: Path,
    *,
    durable: bool,
    rate: float = 40.0,
    before_kill: float = 3.0,
    after_kill: float = 7.0,
    drain_timeout: float = 40.0,
    down_after_ms: int = 1000,
    extra_env: dict[str, str] | None = None,
) -> FailoverResult:
    """Run the whole scenario once in ``directory`` and return what it observed."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = HaCluster(REDIS_SERVER, directory / "redis", down_after_ms=down_after_ms)
    children: list[subprocess.Popen[bytes]] = []
    log_files = []
    redis: Redis | None = None
    db_url = f"sqlite:///{directory / 'archive.db'}"
    try:
        engine = make_engine(db_url)
        init_db(engine)  # once, before several processes race to create the tables
        engine.dispose()
        cluster.start()
        env = dict(os.environ)
        for var in ("REDIS_URL", "ENQUEUE_MIN_REPLICAS", "ALERT_WEBHOOK_URL"):
            env.pop(var, None)
        env.update(cluster.env())
        env.update(
            DATABASE_URL=db_url,
            ENQUEUE_MIN_REPLICAS="1" if durable else "0",
            ENQUEUE_REPLICA_TIMEOUT_MS="1000",
            ENQUEUE_RETRY_SECONDS="10",
            WORKER_MASTER_TIMEOUT="30",
            REDIS_SOCKET_TIMEOUT="2",
            LOG_LEVEL="INFO",
        )
        env.update(extra_env or {})
        port = procs.free_port()
        producer_log = open(directory / "producer.log", "wb")  # noqa: SIM115
        log_files.append(producer_log)
        argv = producer_argv("127.0.0.1", port, 2)
        children.append(procs.spawn(argv, env=env, stdout=producer_log, stderr=producer_log))
        names = [f"failover-{os.getpid()}-{i}-{int(time.time() * 1000) % 100000}" for i in (1, 2)]
        workers = []
        for name in names:
            log = open(directory / f"{name}.log", "wb")  # noqa: SIM115
            log_files.append(log)
            argv = worker_argv(("member",), worker_class=WORKER_CLASS, extra=("--name", name))
            proc = procs.spawn(argv, env=env, stdout=log, stderr=log)
            children.append(proc)
            workers.append(proc)
        if not procs.wait_until(lambda: procs.port_open("127.0.0.1", port), 60):
            raise RuntimeError(f"the producer did not start; see {directory / 'producer.log'}")

        redis = get_redis(Settings.from_env(env))
        registered = {f"rq:worker:{name}".encode() for name in names}
        if not procs.wait_until(lambda: registered <= set(redis.smembers("rq:workers")), 60, 0.2):
            raise RuntimeError(f"the workers did not start; see {directory}")
        client = Client(port, rate, timeout=30.0)
        client.start()
        time.sleep(before_kill)
        killed_at = time.monotonic()
        cluster.kill_master()
        time.sleep(after_kill)
        client.stopping.set()
        client.join(60)
        acknowledged = [p.job_id for p in client.posts if p.status == 202 and p.job_id]

        # An acknowledged job is done when its member row exists (the job's effect), lost when
        # neither a row nor its job hash exists on the new master, stranded otherwise.
        drain_started = time.monotonic()
        rows: set[str] = set()
        states: dict[str, str | None] = {}

        def drained() -> bool:
            rows.update(_rows(db_url, acknowledged))
            pending = [j for j in acknowledged if j not in rows]
            states.update(_job_states(redis, pending))
            return all(states[j] in (None, JobStatus.FAILED.value) for j in pending)

        procs.wait_until(drained, drain_timeout, interval=0.5)
        drain_seconds = time.monotonic() - drain_started
        lost = [j for j in acknowledged if j not in rows and states.get(j) is None]
        stranded = [j for j in acknowledged if j not in rows and states.get(j) is not None]

        # Every worker still takes jobs: who ran the jobs sent after the kill, and a fresh batch.
        extra = Client(port, 50.0, timeout=30.0)
        extra.start()
        procs.wait_until(lambda: sum(1 for p in extra.posts if p.status == 202) >= 30, 20, 0.1)
        extra.stopping.set()
        extra.join(30)
        extra_ids = [p.job_id for p in extra.posts if p.status == 202 and p.job_id]
        procs.wait_until(lambda: set(extra_ids) <= _rows(db_url, extra_ids), 20, 0.2)
        after_kill = [p.job_id for p in client.posts if p.status == 202 and p.job_id and p.sent > killed_at]

        alive = [proc.poll() is None for proc in workers]
        for log in log_files:
            log.flush()
        logs = {name: (directory / f"{name}.log").read_text(errors="replace") for name in names}
        logs["producer"] = (directory / "producer.log").read_text(errors="replace")
        # Run twice: put back by a worker after the failover, or finished with two results.
        put_back = {m.group(1) for name in names for m in _PUT_BACK.finditer(logs[name])}
        with redis.pipeline(transaction=False) as pipe:
            for job_id in acknowledged:
                pipe.xlen(f"rq:results:{job_id}")
            results = pipe.execute()
        twice = [j for j, n in zip(acknowledged, results, strict=True) if j in put_back or n > 1]
        by_worker: Counter[str] = Counter()
        for job_id in after_kill + extra_ids:
            worker_name = redis.hget(Job.key_for(job_id), "worker_name")
            if worker_name:
                by_worker[worker_name.decode()] += 1
        sentinel_log = cluster.directory / "sentinel-1" / "sentinel.log"
        failovers = sentinel_log.read_text().count("+switch-master") if sentinel_log.exists() else -1
        return FailoverResult(
            durable=durable,
            posts=client.posts,
            killed_at=killed_at,
            acknowledged=acknowledged,
            finished=rows & set(acknowledged),
            lost=lost,
            stranded=stranded,
            processed_twice=twice,
            workers_alive=alive,
            workers_after={name: by_worker[name] for name in names},
            failovers=failovers,
            worker_names=names,
            drain_seconds=drain_seconds,
            directory=directory,
            logs=logs,
        )
    finally:
        for proc in children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in children:
            procs.stop(proc, timeout=15)
        for log in log_files:
            log.close()
        if redis is not None:
            close_redis(redis)
        cluster.stop()
