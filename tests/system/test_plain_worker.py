"""RQ's own worker classes, started as ``rq worker -c consumer.settings``, ride out Redis faults mid-job.

A job holds the worker (it waits for a file) while the fault happens; it is released at once,
so the worker finishes it (the forking worker's horse writes the success, its monitor reads the
status) while Redis is away: a Sentinel failover (the master SIGKILLed), a restart of a
standalone Redis with an append-only file, and a full Redis (``maxmemory`` reached). Then the
job must be finished, the worker alive, and a new job processed by it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.connections import close_redis, get_redis
from shared.settings import Settings
from shared.stack import procs
from shared.stack.local import plain_worker_argv
from shared.stack.sentinel import HaCluster
from tests.servers import REDIS_SERVER, ROOT, RedisProc, start_redis

pytestmark = pytest.mark.slow

WORKER_CLASSES = {"rq-Worker": [], "rq-SimpleWorker": ["-w", "rq.SimpleWorker"]}


class Plain:
    """One plain ``rq worker`` process on queue ``member`` and a client of the same Redis."""

    def __init__(self, env: dict[str, str], extra: list[str], log: Path) -> None:
        self.settings = Settings.from_env(env)
        self.log = log
        argv = plain_worker_argv(("member",))
        argv[-1:-1] = extra
        with open(log, "wb") as out:
            self.proc = procs.spawn(argv, env=env, stdout=out, stderr=out, cwd=str(ROOT))
        self.redis = get_redis(self.settings)
        assert procs.wait_until(lambda: self.redis.scard("rq:workers") == 1, 60), self.text()
        [self.key] = self.redis.smembers("rq:workers")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def queue(self) -> Queue:
        return Queue("member", connection=self.redis, serializer=JSONSerializer)

    def close(self) -> None:
        procs.stop(self.proc, timeout=20)
        close_redis(self.redis)


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DB_"))}
    env.update(PYTHONPATH=str(ROOT), LOG_LEVEL="INFO", WORKER_MASTER_TIMEOUT="30")
    env.update(overrides)
    return env


def _fault_mid_job(
    worker: Plain, tmp_path: Path, fault: Callable[[], None], recover: Callable[[], None]
) -> None:
    release = str(tmp_path / "release")
    job = worker.queue().enqueue("tests.parity_jobs.hold", release)
    assert procs.wait_until(lambda: os.path.exists(release + ".started"), 60), worker.text()[-2000:]
    down_at = datetime.now(UTC)
    fault()
    with open(release, "w"):
        pass
    # The job function returns while Redis is away; the worker's writes of its end come next.
    assert procs.wait_until(lambda: os.path.exists(release + ".done"), 30), worker.text()[-2000:]
    recover()
    back_at = datetime.now(UTC)

    def finished() -> bool:
        try:
            return job.get_status(refresh=True) == JobStatus.FINISHED
        except redis.exceptions.RedisError:
            return False

    assert procs.wait_until(finished, 60, interval=0.2), worker.text()[-3000:]
    assert worker.proc.poll() is None, worker.text()[-3000:]
    job.refresh()
    assert job.ended_at is not None and down_at <= job.ended_at <= back_at, (down_at, job.ended_at, back_at)
    after = worker.queue().enqueue("tests.parity_jobs.add", 2, 3)
    assert procs.wait_until(lambda: after.get_status(refresh=True) == JobStatus.FINISHED, 60), worker.text()[
        -3000:
    ]
    assert Job.fetch(after.id, connection=worker.redis, serializer=JSONSerializer).return_value() == 5
    assert worker.redis.smembers("rq:workers") == {worker.key}, "the worker is not the one that started"
    # Every thread that waited logs its end (the command listener may reconnect a moment after).
    assert procs.wait_until(lambda: "Redis answers again" in worker.text(), 30), worker.text()[-3000:]
    text = worker.text()
    assert "Redis unavailable" in text, text[-3000:]
    assert "unhandled exception" not in text and "quitting" not in text, text[-3000:]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[HaCluster]:
    topology = HaCluster(REDIS_SERVER, tmp_path / "redis", down_after_ms=1000)
    topology.start()
    yield topology
    topology.stop()


@pytest.mark.parametrize("extra", list(WORKER_CLASSES))
def test_plain_worker_survives_a_sentinel_failover_mid_job(
    cluster: HaCluster, tmp_path: Path, extra: str
) -> None:
    worker = Plain(_env(**cluster.env()), WORKER_CLASSES[extra], tmp_path / "worker.log")
    killed = []
    try:
        _fault_mid_job(
            worker,
            tmp_path,
            fault=lambda: killed.append(cluster.kill_master()),
            recover=lambda: cluster.wait_for_new_master(killed[0]),
        )
    finally:
        worker.close()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisProc]:
    server = start_redis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.kill()


@pytest.mark.parametrize("extra", list(WORKER_CLASSES))
def test_plain_worker_survives_a_redis_restart_mid_job(
    aof_redis: RedisProc, tmp_path: Path, extra: str
) -> None:
    worker = Plain(_env(REDIS_URL=aof_redis.url), WORKER_CLASSES[extra], tmp_path / "worker.log")
    try:
        # SIGTERM: Redis writes its append-only file and exits; it comes back with the jobs.
        _fault_mid_job(
            worker, tmp_path, fault=lambda: aof_redis.kill(signal.SIGTERM), recover=aof_redis.start
        )
    finally:
        worker.close()


@pytest.mark.parametrize("extra", list(WORKER_CLASSES))
def test_plain_worker_survives_a_full_redis_mid_job(aof_redis: RedisProc, tmp_path: Path, extra: str) -> None:
    worker = Plain(_env(REDIS_URL=aof_redis.url), WORKER_CLASSES[extra], tmp_path / "worker.log")
    admin = aof_redis.client()

    def fill() -> None:
        admin.config_set("maxmemory", "1")  # every write refused with OOM from now on

    def empty() -> None:
        # The worker's success write is refused until memory is back.
        assert procs.wait_until(lambda: "Redis unavailable (OutOfMemoryError" in worker.text(), 30)
        admin.config_set("maxmemory", "0")

    try:
        _fault_mid_job(worker, tmp_path, fault=fill, recover=empty)
    finally:
        admin.close()
        worker.close()


def test_plain_worker_gives_up_past_the_limit_with_a_clear_message(
    aof_redis: RedisProc, tmp_path: Path
) -> None:
    worker = Plain(_env(REDIS_URL=aof_redis.url, WORKER_MASTER_TIMEOUT="2"), [], tmp_path / "worker.log")
    try:
        aof_redis.kill()
        assert procs.wait_until(lambda: worker.proc.poll() is not None, 30), worker.text()[-2000:]
    finally:
        worker.close()
    assert worker.proc.returncode == 1
    text = worker.text()
    assert "longer than WORKER_MASTER_TIMEOUT=2s; giving up" in text, text[-2000:]
