"""The worker's fault policy: it reconnects by itself, exits non-zero without a master, puts jobs back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from consumer.worker import EXIT_NO_MASTER, FastWorker
from shared.constants import CREATE_MEMBER_JOB
from shared.rqmodel.requeue import Requeued
from shared.stack.local import worker_argv
from shared.stack.procs import free_port, spawn, wait_until
from tests.servers import RedisProc, start_redis

WORKER_CLASS = "consumer.worker.FastWorker"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server this test may kill and restart."""
    server = start_redis(tmp_path / "redis")
    yield server
    server.kill()


def start_worker(
    url: str, tmp_path: Path, db_url: str, limit: float, worker_class: str = WORKER_CLASS
) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_SENTINEL")}
    env.update(REDIS_URL=url, DATABASE_URL=db_url, WORKER_MASTER_TIMEOUT=str(limit))
    with open(log, "wb") as out:
        proc = spawn(worker_argv(("member",), worker_class=worker_class), env=env, stdout=out, stderr=out)
    return proc, log


def wait_registered(client: redis.Redis, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the worker is past its start-up and waiting for jobs."""

    def idle() -> bool:
        keys = client.smembers("rq:workers")
        return any(client.hget(key, "state") in (b"idle", b"busy") for key in keys) or proc.poll() is not None

    assert wait_until(idle, 30)
    assert proc.poll() is None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_no_master_for_longer_than_the_limit_exits_non_zero(
    own_redis: RedisProc, tmp_path: Path, db_url: str
) -> None:
    client = own_redis.client()
    proc, log = start_worker(own_redis.url, tmp_path, db_url, limit=1.0)
    try:
        wait_registered(client, proc)
        own_redis.kill()
        proc.wait(30)
    finally:
        stop(proc)
        client.close()
    assert proc.returncode == EXIT_NO_MASTER
    assert "no Redis master for" in log.read_text()


def test_a_worker_started_without_a_master_exits_non_zero(tmp_path: Path, db_url: str) -> None:
    # RQ's start-up (consumer.settings' client) waits out the limit, then gives up with status 1
    # and says why; a supervisor restarts it.
    started = time.monotonic()
    proc, log = start_worker(f"redis://127.0.0.1:{free_port()}/0", tmp_path, db_url, limit=2)
    try:
        proc.wait(30)
    finally:
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 1, text[-2000:]
    assert time.monotonic() - started >= 2
    assert "longer than WORKER_MASTER_TIMEOUT=2s" in text, text[-2000:]


def test_worker_reconnects_after_an_outage_and_keeps_processing(
    own_redis: RedisProc, tmp_path: Path, db_url: str
) -> None:
    client = own_redis.client()
    proc, log = start_worker(own_redis.url, tmp_path, db_url, limit=30)
    try:
        wait_registered(client, proc)
        own_redis.kill()
        time.sleep(1.5)
        own_redis.restart()
        client.close()
        client = own_redis.client()
        queue = Queue("member", connection=client, serializer=JSONSerializer)
        job = queue.enqueue(CREATE_MEMBER_JOB, {"name": "After", "age": 1})
        finished = wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, 30)
        assert finished, log.read_text()[-3000:]
        assert proc.poll() is None
    finally:
        stop(proc)
        client.close()
    text = log.read_text()
    assert "lost the Redis master" in text and "Redis master back" in text


@pytest.fixture
def worker(r: redis.Redis) -> Iterator[FastWorker]:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    w = FastWorker([queue], connection=r, serializer=JSONSerializer, master_timeout=1)
    yield w


def _enqueue(r: redis.Redis) -> tuple[Queue, Job]:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    return queue, queue.enqueue(CREATE_MEMBER_JOB, {"name": "X", "age": 2})


def test_recover_job_puts_a_started_job_back_at_the_front(
    worker: FastWorker, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue, other = _enqueue(r)
    job = queue.enqueue(CREATE_MEMBER_JOB, {"name": "Y", "age": 3})
    # Simulate the failover cutting the worker off after the job was taken and started.
    r.lrem(queue.key, 0, job.id)
    r.rpush(queue.intermediate_queue_key, job.id)
    execution = worker.prepare_execution(job)
    job.set_status(JobStatus.STARTED)
    assert len(queue.started_job_registry) == 1
    worker.faults.put_back(job)
    assert r.lrange(queue.key, 0, -1) == [job.id.encode(), other.id.encode()]
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert r.zcard(queue.started_job_registry.key) == 0
    assert r.llen(queue.intermediate_queue_key) == 0
    assert execution.id not in worker.executions
    assert f"job {job.id} put back on member" in caplog.text


def test_recover_job_when_the_new_master_lacks_the_execution_hash(worker: FastWorker, r: redis.Redis) -> None:
    """Asynchronous replication can lose the execution hash while keeping the registry entry."""
    queue, job = _enqueue(r)
    r.lrem(queue.key, 0, job.id)
    execution = worker.prepare_execution(job)
    job.set_status(JobStatus.STARTED)
    r.delete(execution.key)
    assert worker.faults.put_back(job) is Requeued.QUEUED
    assert r.lrange(queue.key, 0, -1) == [job.id.encode()]
    assert r.zcard(queue.started_job_registry.key) == 0


def test_recover_job_leaves_queued_and_finished_jobs_alone(worker: FastWorker, r: redis.Redis) -> None:
    queue, job = _enqueue(r)
    worker.faults.put_back(job)
    assert r.lrange(queue.key, 0, -1) == [job.id.encode()]
    r.lpop(queue.key)
    job.set_status(JobStatus.FINISHED)
    worker.faults.put_back(job)
    assert r.llen(queue.key) == 0


def test_recover_job_of_a_job_lost_with_the_old_master_is_a_no_op(worker: FastWorker, r: redis.Redis) -> None:
    queue, job = _enqueue(r)
    r.flushall()
    worker.faults.put_back(job)
    assert r.keys("*") == []


def test_a_claim_the_worker_never_received_is_put_back(worker: FastWorker, r: redis.Redis) -> None:
    queue, job = _enqueue(r)
    # The old master ran the claim (job started, execution registered for this worker) and
    # replicated it, but its reply never reached the worker.
    r.lrem(queue.key, 0, job.id)
    job.set_status(JobStatus.STARTED)
    r.sadd(worker.executions_key, f"{job.id}:phantom")
    assert worker.faults.recover_phantom_claims() == [job.id]
    assert r.lrange(queue.key, 0, -1) == [job.id.encode()]
    assert r.smembers(worker.executions_key) == set()
