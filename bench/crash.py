"""Crash run: member jobs while a worker is SIGKILLed mid-job again and again, then restarted.

``python -m bench.crash --jobs 2000 --kills 10`` (default ``HEARTBEAT_TIMEOUT`` 15 s) checks that
every job finishes, that there is exactly one member row per job, and that each job the
killed worker was running went back to its queue within ``HEARTBEAT_TIMEOUT`` of the kill.
``tests/consumer/test_recovery.py`` runs the same harness smaller.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import select

from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE
from shared.db import init_db, make_engine, member
from shared.settings import Settings
from shared.stack import procs
from shared.stack.local import worker_argv

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Kill:
    """One SIGKILL: when, which worker, and the jobs it was running."""

    at: float
    worker: str
    job_ids: list[str]


@dataclass
class CrashReport:
    """What a crash run observed."""

    jobs: int
    finished: int
    rows: int
    distinct_rows: int
    kills: list[Kill] = field(default_factory=list)
    requeue_delays: dict[str, float] = field(default_factory=dict)
    restarted_late: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def abandoned(self) -> int:
        return sum(len(kill.job_ids) for kill in self.kills)


def _enqueue_options(settings: Settings) -> dict[str, object]:
    from rq import Callback, Retry

    return {
        "job_timeout": settings.job_timeout,
        "result_ttl": settings.result_ttl,
        "failure_ttl": settings.failure_ttl,
        "description": CREATE_MEMBER_JOB_NAME,
        "meta": {"name": CREATE_MEMBER_JOB_NAME, "maxAttempts": settings.job_attempts},
        "on_success": Callback("consumer.events.on_success"),
        "on_failure": Callback("consumer.events.on_failure"),
        "retry": Retry(max=settings.job_attempts - 1, interval=list(settings.retry_intervals)),
    }


def run_crash(
    redis_url: str,
    database_url: str,
    *,
    jobs: int,
    kills: int,
    heartbeat_timeout: float,
    rate: float,
    log_dir: Path,
    timeout: float = 300.0,
) -> CrashReport:
    """Enqueue ``jobs`` member jobs at ``rate``/s into two fast workers; SIGKILL one ``kills`` times."""
    conn = Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    queue = Queue(MEMBER_QUEUE, connection=conn, serializer=JSONSerializer)
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        HEARTBEAT_TIMEOUT=str(heartbeat_timeout),
        PYTHONPATH=str(ROOT),
    )
    logs = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
        logs.append(log)
        argv = worker_argv([MEMBER_QUEUE], extra=["--name", name])
        return procs.spawn(argv, env=env, stdout=log.fileno(), stderr=log.fileno(), cwd=str(ROOT))

    job_ids: list[str] = []
    options = _enqueue_options(settings)

    def produce() -> None:
        batch = max(1, int(rate / 20))
        while len(job_ids) < jobs:
            with conn.pipeline() as pipe:
                for _ in range(min(batch, jobs - len(job_ids))):
                    payload = {"name": f"crash {len(job_ids)}", "age": len(job_ids) % 150}
                    job_ids.append(queue.enqueue(CREATE_MEMBER_JOB, payload, pipeline=pipe, **options).id)
                pipe.execute()
            time.sleep(batch / rate)

    engine = make_engine(database_url)
    init_db(engine)
    survivor = start("survivor")
    victim = start("victim-0")
    victim_name = "victim-0"
    report = CrashReport(jobs=jobs, finished=0, rows=0, distinct_rows=0)
    started = time.monotonic()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        for n in range(kills):
            executions_key = f"rq:worker:{victim_name}:executions"
            deadline = time.monotonic() + 30
            # Kill while the victim holds a job, so that the kill abandons it.
            while not conn.scard(executions_key) and time.monotonic() < deadline:
                time.sleep(0.001)
            os.killpg(victim.pid, signal.SIGKILL)
            at = time.time()
            victim.wait()
            held = [m.decode().split(":")[0] for m in conn.smembers(executions_key)]
            report.kills.append(Kill(at, victim_name, held))
            victim_name = f"victim-{n + 1}"
            victim = start(victim_name)
            time.sleep(0.5)
        producer.join()

        def all_done() -> bool:
            done = 0
            for job in Job.fetch_many(job_ids, connection=conn, serializer=JSONSerializer):
                if job is not None and job.get_status(refresh=False) in (
                    JobStatus.FINISHED,
                    JobStatus.FAILED,
                ):
                    done += 1
            report.finished = done
            return done == jobs

        procs.wait_until(all_done, timeout, interval=0.5)
        report.seconds = time.monotonic() - started
        finished = 0
        for job in Job.fetch_many(job_ids, connection=conn, serializer=JSONSerializer):
            if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED:
                finished += 1
        report.finished = finished
        for kill in report.kills:
            for job_id in kill.job_ids:
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
                assert job.enqueued_at is not None
                report.requeue_delays[job_id] = job.enqueued_at.timestamp() - kill.at
                if job.started_at is None or job.started_at.timestamp() < kill.at:
                    report.restarted_late.append(job_id)
        ids = set(job_ids)
        with engine.connect() as db:
            rows = db.execute(select(member.c.job_id)).scalars().all()
        ours = [row for row in rows if row in ids]
        report.rows = len(ours)
        report.distinct_rows = len(set(ours))
    finally:
        for proc in (survivor, victim):
            procs.stop(proc, timeout=20)
        for log in logs:
            log.close()
        engine.dispose()
        conn.close()
    return report


def main() -> None:
    """Run the crash harness on a private redis-server and the given database."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=150.0, help="jobs enqueued per second")
    parser.add_argument("--heartbeat-timeout", type=float, default=15.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    from bench.common import private_redis

    with private_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        report = run_crash(
            redis_url,
            args.database_url,
            jobs=args.jobs,
            kills=args.kills,
            heartbeat_timeout=args.heartbeat_timeout,
            rate=args.rate,
            log_dir=Path(tmp),
        )
    delays = sorted(report.requeue_delays.values())
    print(
        f"jobs {report.jobs}, finished {report.finished}, "
        f"rows {report.rows} ({report.distinct_rows} distinct)"
    )
    print(f"kills {len(report.kills)}, abandoned jobs {report.abandoned}, took {report.seconds:.1f}s")
    if delays:
        print(f"re-queued after the kill: min {delays[0]:.1f}s, max {delays[-1]:.1f}s")
    ok = (
        report.finished == report.jobs
        and report.rows == report.jobs == report.distinct_rows
        and all(d <= args.heartbeat_timeout for d in delays)
        and not report.restarted_late
    )
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
