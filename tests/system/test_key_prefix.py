"""Under RQ_KEY_PREFIX every part sees the same jobs: producer, workers, recovery, rq info, dashboard."""

from __future__ import annotations

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
import requests
from sqlalchemy import func, select

from shared.db import make_engine, member
from shared.rqmodel.keys import RQKeys
from shared.stack.local import monitor_argv, producer_argv, worker_argv
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import RedisProc, kill_all, run_env

pytestmark = pytest.mark.slow

PASSWORD = "prefix-test"
MEMBERS = 120

#: Enqueues a job that sleeps (for a worker to die in), printing its id; RQ reads the prefix
#: from the environment at import, so this runs in a process of its own.
_ENQUEUE_SLEEPER = """
import sys
from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer
queue = Queue("slow", connection=Redis.from_url(sys.argv[1]), serializer=JSONSerializer)
print(queue.enqueue("time.sleep", 60, job_timeout=120, retry=Retry(max=2)).id)
"""


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    db_url: str
    procs: list[subprocess.Popen[bytes]]
    directory: Path

    def start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc


@pytest.fixture(params=["{rq}", "myapp"])
def stack(
    request: pytest.FixtureRequest, redis_proc: RedisProc, r: redis.Redis, tmp_path: Path
) -> Iterator[Stack]:
    """The producer, a FastWorker, a plain `rq worker` and the monitor, all under one RQ_KEY_PREFIX."""
    db_url = f"sqlite:///{tmp_path / 'prefix.db'}"
    env = run_env(
        REDIS_URL=redis_proc.url,
        DATABASE_URL=db_url,
        RQ_KEY_PREFIX=request.param,
        LOG_LEVEL="INFO",
        HEARTBEAT_TIMEOUT="3",
        DASHBOARD_PASSWORD=PASSWORD,
        MEMORY_SAMPLE_SECONDS="0",
    )
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", env, db_url, [], tmp_path)
    stack.start(producer_argv("127.0.0.1", port, workers=1), "producer")
    stack.start(worker_argv(["member"], worker_class="consumer.worker.FastWorker"), "fast")
    stack.start(
        [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json", "member"], "plain"
    )
    stack.start(monitor_argv(), "monitor")
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30), "producer did not start"
        yield stack
    finally:
        kill_all(stack.procs)


def test_member_queue_end_to_end_under_the_prefix(stack: Stack, r: redis.Redis) -> None:
    prefix = stack.env["RQ_KEY_PREFIX"]
    keys = RQKeys(prefix)

    with ThreadPoolExecutor(8) as pool, requests.Session() as session:
        responses = list(
            pool.map(
                lambda i: session.post(f"{stack.base}/queue/members", json={"name": f"m{i}", "age": 30}),
                range(MEMBERS),
            )
        )
    assert {response.status_code for response in responses} == {202}
    job_ids = [response.json()["jobId"] for response in responses]

    engine = make_engine(stack.db_url)

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(member)).scalar_one())

    assert wait_until(lambda: rows() >= MEMBERS, 120, interval=0.2), f"{rows()} of {MEMBERS} rows"
    time.sleep(0.3)
    assert rows() == MEMBERS
    engine.dispose()

    # Both workers took part, and every job finished under the prefix.
    for job_id in job_ids:
        assert wait_until(lambda job_id=job_id: r.hget(keys.job(job_id), "status") == b"finished", 10)
    workers = {r.hget(keys.job(job_id), "worker_name") for job_id in job_ids}
    assert len(workers) == 2, workers
    assert r.zcard(keys.finished("member")) == MEMBERS
    info = requests.get(f"{stack.base}/jobs/{job_ids[0]}", timeout=10).json()
    assert info["status"] == "finished" and info["attempts"] == 1

    # Nothing was written under RQ's default prefix: every RQ key carries this one.
    if prefix != "rq":
        assert r.keys("rq:*") == []
    assert r.exists(keys.queues, keys.workers) == 2

    # rq info (RQ's own command, same prefix from the environment) sees the queue and both workers.
    out = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--url", stack.env["REDIS_URL"], "-S", "json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "member" in out.stdout and "2 workers, " in out.stdout, out.stdout

    # The dashboard and /metrics read the same registries.
    queues = requests.get(
        f"{stack.base}/dashboard/0/data/queues.json", auth=("admin", PASSWORD), timeout=10
    ).json()["queues"]
    by_name = {queue["name"]: queue for queue in queues}
    assert by_name["member"]["finished_job_registry_count"] == MEMBERS
    metrics = requests.get(f"{stack.base}/metrics", timeout=10).text
    assert f'archive_queue_jobs{{queue="member",registry="finished"}} {float(MEMBERS)}' in metrics


def test_recovery_requeues_a_dead_workers_job_under_the_prefix(stack: Stack, r: redis.Redis) -> None:
    keys = RQKeys(stack.env["RQ_KEY_PREFIX"])
    url = stack.env["REDIS_URL"]
    out = subprocess.run(
        [sys.executable, "-c", _ENQUEUE_SLEEPER, url],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    doomed = stack.start(worker_argv(["slow"], worker_class="consumer.worker.FastWorker"), "doomed")
    assert wait_until(lambda: r.hget(keys.job(job_id), "status") == b"started", 30), "the job never started"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    killed = time.monotonic()
    # The monitor (HEARTBEAT_TIMEOUT=3) puts it back in its queue, counted as an attempt.
    assert wait_until(lambda: job_id.encode() in r.lrange(keys.queue("slow"), 0, -1), 15), "not re-queued"
    assert time.monotonic() - killed < 6
    assert r.hget(keys.job(job_id), "status") == b"queued"
    assert r.hget(keys.job(job_id), "retries_left") == b"1"
    assert not [m for m in r.zrange(keys.started("slow"), 0, -1) if m.decode().startswith(job_id)]

    # The monitor or the surviving FastWorker, whichever looked first, took it over and said so.
    # The recoverer logs "declared dead" after the re-queue's pipeline: wait for the line.
    def logs() -> str:
        return "".join((stack.directory / f"{name}.log").read_text() for name in ("monitor", "fast"))

    assert wait_until(lambda: "declared dead; 1 job(s) recovered" in logs(), 10), logs()
    assert f"job abandoned id={job_id}" in logs(), logs()
