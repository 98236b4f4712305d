"""Crash test: member jobs while a worker is SIGKILLed mid-job again and again and restarted.

Smaller than the full run (``python -m bench.crash``: 2,000 jobs, 10 kills, 15 s heartbeat
timeout) to fit the test budget: 300 jobs, 4 kills, a 5 s heartbeat timeout.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from bench.crash import run_crash
from shared.stack.local import monitor_argv
from shared.stack.procs import spawn, wait_until
from shared.stack.procs import stop as stop_proc
from tests.servers import ROOT, RedisProc

JOBS = 300
KILLS = 4
HEARTBEAT_TIMEOUT = 5.0


@pytest.mark.slow
def test_every_job_finishes_once_despite_repeated_kills(
    redis_proc: RedisProc, r: object, postgres_url: str, tmp_path: Path
) -> None:
    report = run_crash(
        redis_proc.url,
        postgres_url,
        jobs=JOBS,
        kills=KILLS,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        rate=60.0,
        log_dir=tmp_path,
        timeout=120,
    )
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert report.finished == JOBS, logs[-3000:]
    assert report.rows == JOBS and report.distinct_rows == JOBS
    assert len(report.kills) == KILLS
    assert report.abandoned >= 1, "no kill landed on a running job"
    # Each abandoned job went back to its queue within the heartbeat timeout, and ran again after.
    assert report.requeue_delays and max(report.requeue_delays.values()) <= HEARTBEAT_TIMEOUT
    assert report.restarted_late == []
    assert "job abandoned" in logs


@pytest.mark.slow
def test_retries_run_with_plain_workers_and_the_monitor(
    redis_proc: RedisProc, r: redis.Redis, tmp_path: Path
) -> None:
    """No worker runs --with-scheduler: the monitor's scheduler brings each retry back."""
    env = dict(
        os.environ,
        REDIS_URL=redis_proc.url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
        PYTHONPATH=str(ROOT),
    )
    env.pop("REDIS_SENTINELS", None)
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue("tests.parity_jobs.fail_then_succeed", "runs", 2, retry=Retry(max=2, interval=[1, 1]))
    later = queue.enqueue_in(timedelta(seconds=1), "tests.parity_jobs.add", 2, 3)
    log = open(tmp_path / "procs.log", "wb")  # noqa: SIM115
    worker = spawn(
        [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json", "member"],
        env=env, stdout=log, stderr=log, cwd=str(ROOT),
    )  # fmt: skip
    procs_started = [worker]
    try:
        # The first attempt fails and waits in the scheduled registry; the plain rq worker alone
        # never moves it (it is still there well after its 1 s interval).
        assert wait_until(lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED, 30)
        time.sleep(2.5)
        assert job.get_status(refresh=True) == JobStatus.SCHEDULED and r.get("runs") == b"1"
        procs_started.append(spawn(monitor_argv(), env=env, stdout=log, stderr=log, cwd=str(ROOT)))
        assert wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 30), (
            tmp_path / "procs.log"
        ).read_text()[-3000:]
        assert wait_until(lambda: later.get_status(refresh=True) == JobStatus.FINISHED, 30)
        # The monitor holds RQ's scheduler lock of the queue.
        holder = r.get("rq:scheduler-lock:member")
        assert holder is not None and holder.startswith(b"monitor-")
    finally:
        for proc in procs_started:
            stop_proc(proc)
        log.close()
    assert r.get("runs") == b"3"
    assert later.return_value() == 5


def test_the_monitor_retries_a_plain_rq_workers_abandoned_job(r: redis.Redis) -> None:
    """A plain rq worker killed with its horse leaves an execution whose heartbeat runs out."""
    from consumer.recovery import clean_started_registries

    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue("tests.parity_jobs.add", 1, 2, retry=Retry(max=2, interval=0))
    assert queue.dequeue_any([queue], None, connection=r, serializer=JSONSerializer) is not None
    job.set_status(JobStatus.STARTED)
    r.zadd(queue.started_job_registry.key, {f"{job.id}:dead-execution": 1})  # long expired
    clean_started_registries(r, ("member", "goods"))
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED
    assert job.retries_left == 1
    assert queue.job_ids == [job.id]
    assert r.zcard(queue.started_job_registry.key) == 0
