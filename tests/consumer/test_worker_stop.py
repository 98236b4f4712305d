"""Stops: real ``rq worker -w consumer.worker.FastWorker`` processes signalled in random phases.

An idle worker (starting up, waiting for work, with or without ``--with-scheduler``, one queue
or three) exits within :data:`LIMIT` seconds of SIGINT or SIGTERM; a busy one finishes its job,
then exits within :data:`LIMIT` seconds of the job's end; a second signal stops it at once; a
worker waiting for a lost master stops too. Runs go two at a time, beside whatever else
loads the machine: the bound is what users get on a busy host.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.stack.procs import spawn, wait_until
from tests import parity_jobs as pj
from tests.servers import ROOT, RedisProc, start_redis

#: Seconds from the signal (or, busy, from the job's end) to the process's exit.
LIMIT = 2.0
#: Runs of the random-phase test, three phases x two signals x one or three queues, three times.
RUNS = 36
PHASES = ("starting", "idle", "busy")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Stop:
    """One signalled worker: what was done to it and what it did."""

    phase: str
    signum: int
    queues: int
    scheduler: bool
    waited: float  # seconds from the signal (busy: from the later of the signal and the job's end)
    returncode: int | None
    job_status: str | None
    log: str

    def describe(self) -> str:
        return (
            f"{self.phase} {signal.Signals(self.signum).name} queues={self.queues} "
            f"scheduler={self.scheduler}: "
            f"exit after {self.waited:.2f}s rc={self.returncode} job={self.job_status}\n{self.log[-1500:]}"
        )


def _argv(queues: list[str], scheduler: bool) -> list[str]:
    argv = [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json"]
    argv += ["-w", "consumer.worker.FastWorker"]
    if scheduler:
        argv.append("--with-scheduler")
    return argv + queues


def _env(url: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_SENTINEL", "RQ_"))}
    env.update(REDIS_URL=url, DATABASE_URL=db_url, PYTHONPATH=str(ROOT), WORKER_MASTER_TIMEOUT="30")
    return env


def _idle(client: redis.Redis, proc: subprocess.Popen[bytes]) -> bool:
    for key in client.smembers("rq:workers"):
        if client.hget(key, "pid") == str(proc.pid).encode() and client.hget(key, "state") == b"idle":
            return True
    return proc.poll() is not None


def _exit_time(proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """The moment ``proc`` exited (polled every 10 ms), or ``None`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return time.time()
        time.sleep(0.01)
    return None


def _signal_one(run: int, url: str, db_url: str, tmp_path: Path, rng: random.Random) -> Stop:
    phase = PHASES[run % 3]
    signum = SIGNALS[(run // 3) % 2]
    count = 1 if (run // 6) % 2 == 0 else 3
    scheduler = rng.random() < 0.5
    queues = [f"stop{run}-{i}" for i in range(count)]
    client = redis.Redis.from_url(url)
    log_path = tmp_path / f"worker-{run}.log"
    job: Job | None = None
    with open(log_path, "wb") as out:
        proc = spawn(_argv(queues, scheduler), env=_env(url, db_url), stdout=out, stderr=out, cwd=str(ROOT))
    try:
        if phase == "starting":
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            assert wait_until(lambda: _idle(client, proc), 60), log_path.read_text()[-2000:]
            if phase == "busy":
                queue = Queue(rng.choice(queues), connection=client, serializer=JSONSerializer)
                # Busy from the job function's start: a claim that ran in Redis but whose reply
                # the worker has not read yet is put back by a stop, not run.
                marker = tmp_path / f"job-{run}.started"
                job = queue.enqueue(pj.sleep_marked, str(marker), 1.0)
                assert wait_until(marker.exists, 30), log_path.read_text()[-2000:]
            time.sleep(rng.uniform(0.0, 0.5))
        signalled = time.time()
        proc.send_signal(signum)
        exited = _exit_time(proc, 30.0)
        status = None
        since = signalled
        if job is not None:
            status = job.get_status(refresh=True).value
            ended = job.ended_at.timestamp() if job.ended_at else signalled
            since = max(signalled, ended)
        waited = (exited - since) if exited is not None else float("inf")
        return Stop(phase, signum, count, scheduler, waited, proc.returncode, status, log_path.read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()


@pytest.fixture
def stop_redis(tmp_path: Path) -> Iterator[RedisProc]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.kill()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_workers_signalled_in_random_phases_stop_on_time(
    stop_redis: RedisProc, db_url: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rngs = [random.Random(seed + i) for i in range(RUNS)]
    with ThreadPoolExecutor(2) as pool:
        stops = list(
            pool.map(lambda i: _signal_one(i, stop_redis.url, db_url, tmp_path, rngs[i]), range(RUNS))
        )
    late = [s.describe() for s in stops if s.waited > LIMIT]
    assert late == [], f"seed {seed}: " + "\n\n".join(late)
    for s in stops:
        if s.phase != "starting":
            # A warm stop: RQ's exit status 0.
            assert s.returncode == 0, f"seed {seed}: " + s.describe()
        if s.phase == "busy":
            assert s.job_status == "finished", f"seed {seed}: " + s.describe()
    assert len(stops) >= 30
    assert {(s.phase, s.signum, s.queues) for s in stops} == {
        (p, int(sig), q) for p in PHASES for sig in SIGNALS for q in (1, 3)
    }


@pytest.mark.slow
def test_a_second_signal_stops_a_busy_worker_at_once(
    stop_redis: RedisProc, db_url: str, tmp_path: Path
) -> None:
    client = stop_redis.client()
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as out:
        proc = spawn(
            _argv(["cold"], True), env=_env(stop_redis.url, db_url), stdout=out, stderr=out, cwd=str(ROOT)
        )
    try:
        assert wait_until(lambda: _idle(client, proc), 60), log_path.read_text()[-2000:]
        marker = tmp_path / "job.started"
        job = Queue("cold", connection=client, serializer=JSONSerializer).enqueue(
            pj.sleep_marked, str(marker), 30
        )
        assert wait_until(marker.exists, 30), log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a second signal within a second of the first
        assert proc.poll() is None, "a warm stop must wait for the running job"
        proc.send_signal(signal.SIGINT)
        signalled = time.time()
        exited = _exit_time(proc, 30.0)
        assert exited is not None and exited - signalled <= LIMIT, log_path.read_text()[-2000:]
        assert job.get_status(refresh=True) == JobStatus.STARTED  # recovery re-queues it
        assert "cold shut down" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_worker_waiting_for_a_master_stops_at_once(db_url: str, tmp_path: Path, signum: int) -> None:
    server = start_redis(tmp_path / "redis")
    client = server.client()
    log_path = tmp_path / "worker.log"
    try:
        with open(log_path, "wb") as out:
            proc = spawn(
                _argv(["lost"], False), env=_env(server.url, db_url), stdout=out, stderr=out, cwd=str(ROOT)
            )
        assert wait_until(lambda: _idle(client, proc), 60), log_path.read_text()[-2000:]
        server.kill()
        assert wait_until(lambda: "lost the Redis master" in log_path.read_text(), 30), log_path.read_text()[
            -2000:
        ]
        time.sleep(0.3)
        proc.send_signal(signum)
        signalled = time.time()
        exited = _exit_time(proc, 30.0)
        assert exited is not None and exited - signalled <= LIMIT, log_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()
        server.kill()


@pytest.mark.slow
def test_a_stop_puts_back_the_jobs_claimed_ahead_of_the_threads(
    stop_redis: RedisProc, db_url: str, tmp_path: Path
) -> None:
    """``WORKER_CONCURRENCY=2`` claims one job ahead; a warm stop runs the two and puts that one back."""
    client = stop_redis.client()
    log_path = tmp_path / "worker.log"
    env = dict(_env(stop_redis.url, db_url), WORKER_CONCURRENCY="2")
    with open(log_path, "wb") as out:
        proc = spawn(_argv(["ahead"], False), env=env, stdout=out, stderr=out, cwd=str(ROOT))
    try:
        assert wait_until(lambda: _idle(client, proc), 60), log_path.read_text()[-2000:]
        queue = Queue("ahead", connection=client, serializer=JSONSerializer)
        jobs = [queue.enqueue(pj.sleep, 1.5) for _ in range(4)]
        # Two run, one waits for a thread (started, as RQ counts), one stays queued.
        assert wait_until(lambda: queue.count == 1 and len(queue.started_job_registry) == 3, 30)
        proc.send_signal(signal.SIGTERM)
        exited = _exit_time(proc, 30.0)
        assert exited is not None and proc.returncode == 0, log_path.read_text()[-2000:]
        for job in jobs:
            job.refresh()
        statuses = [job.get_status(refresh=False) for job in jobs]
        assert statuses.count(JobStatus.FINISHED) == 2
        assert statuses.count(JobStatus.QUEUED) == 2
        put_back = next(job for job, status in zip(jobs, statuses, strict=True) if status == JobStatus.QUEUED)
        assert queue.get_job_ids()[0] == put_back.id  # back at the front, ahead of the never-claimed one
        assert len(queue.started_job_registry) == 0
        last_end = max(job.ended_at.timestamp() for job in jobs if job.ended_at)
        assert exited - last_end <= LIMIT
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        client.close()


#: A worker whose stop signal lands while a finalizer runs (as a dropped connection pool's
#: ``__del__`` under garbage collection): Python prints and drops what the handler raises there.
SIGNAL_IN_A_FINALIZER = """
import os, signal, sys, time
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from consumer.worker import FastWorker

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the handler runs here, inside the finalizer
            pass

connection = Redis.from_url(sys.argv[1])
queue = Queue("finalized", connection=connection, serializer=JSONSerializer)
worker = FastWorker([queue], connection=connection, serializer=JSONSerializer)
worker.install_signal_handlers()
Finalized()  # dropped at once: its finalizer runs and is signalled
started = time.monotonic()
worker.work()
print(f"stopped after {time.monotonic() - started:.2f}s")
"""


@pytest.mark.slow
def test_a_stop_signal_that_lands_in_a_finalizer_is_not_lost(
    stop_redis: RedisProc, db_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_A_FINALIZER, stop_redis.url],
        env=_env(stop_redis.url, db_url),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert "Exception ignored in" in result.stderr  # the raise in the finalizer was dropped ...
    assert result.returncode == 0, output[-2000:]
    assert "stopping on request" in result.stdout  # ... and the request was kept
    waited = float(result.stdout.split("stopped after ")[1].rstrip("s\n"))
    assert waited <= LIMIT, output[-2000:]
