"""What a worker sends Redis per job: round trips and commands (``INFO commandstats``).

``python -m bench.per_job [--jobs 2000]``: on a private redis-server, each case enqueues its
jobs, resets Redis's command statistics, runs one burst worker in this process (round trips
counted at the connection: each write of a request is one) and prints per job the round trips,
the commands Redis ran (a script's own calls not counted apart) and the commands by name.
Cases: FastWorker on no-op jobs, in turn and on threads; FastWorker on the member job with its
callbacks (a database row, the ``job completed`` count); RQ's ``SimpleWorker`` on the same.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.connection import AbstractConnection
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from bench.common import private_redis

QUEUE = "member"


@contextmanager
def counted_writes() -> Iterator[Counter[str]]:
    """Count the requests written to Redis by this process (one per round trip)."""
    counts: Counter[str] = Counter()
    original = AbstractConnection.send_packed_command

    def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        counts["round trips"] += 1
        original(self, command, check_health)

    AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def commandstats(conn: Redis) -> Counter[str]:
    """Calls per command since the last ``CONFIG RESETSTAT``."""
    stats = conn.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def run_case(
    url: str, jobs: int, enqueue: Callable[[Queue], None], work: Callable[[Redis, Queue], None]
) -> dict[str, Any]:
    """Per-job round trips and commands of one worker run over ``jobs`` jobs."""
    conn = Redis.from_url(url)
    conn.flushall()
    queue = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    for _ in range(jobs):
        enqueue(queue)
    worker_conn = Redis.from_url(url)
    worker_queue = Queue(QUEUE, connection=worker_conn, serializer=JSONSerializer)
    conn.config_resetstat()
    with counted_writes() as writes:
        work(worker_conn, worker_queue)
    stats = commandstats(conn)
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    finished = len(worker_queue.finished_job_registry)
    worker_conn.close()
    conn.close()
    return {
        "finished": finished,
        "round trips": writes["round trips"] / jobs,
        "commands": sum(stats.values()) / jobs,
        "by command": {name: calls / jobs for name, calls in stats.most_common() if calls / jobs >= 0.01},
    }


def main() -> None:
    """Print the per-job table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/per-job.db")
        from consumer.worker import FastWorker
        from producer.enqueue import job_options
        from shared.constants import CREATE_MEMBER_JOB
        from shared.settings import Settings

        options = job_options(Settings.from_env(), "member")
        counter = iter(range(10**9))

        def noop(queue: Queue) -> None:
            queue.enqueue("bench.jobs.noop", 1)

        def member(queue: Queue) -> None:
            n = next(counter)
            queue.enqueue(
                CREATE_MEMBER_JOB, {"name": f"Kim {n}", "age": 30, "email": f"k{n}@example.com"}, **options
            )

        def fast(concurrency: int = 1) -> Callable[[Redis, Queue], None]:
            def work(conn: Redis, queue: Queue) -> None:
                worker = FastWorker(
                    [queue], connection=conn, serializer=JSONSerializer, concurrency=concurrency
                )
                worker.work(burst=True, logging_level="WARNING")

            return work

        def simple(conn: Redis, queue: Queue) -> None:
            SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(
                burst=True, logging_level="WARNING"
            )

        cases = [
            ("FastWorker, no-op jobs", noop, fast()),
            ("FastWorker WORKER_CONCURRENCY=10, no-op jobs", noop, fast(10)),
            ("FastWorker, member jobs (row + callbacks)", member, fast()),
            ("SimpleWorker, no-op jobs", noop, simple),
            ("SimpleWorker, member jobs (row + callbacks)", member, simple),
        ]
        with private_redis() as url:
            print(f"per job, {args.jobs} jobs per case, one burst worker (bench.per_job)")
            for name, enqueue, work in cases:
                result = run_case(url, args.jobs, enqueue, work)
                top = ", ".join(f"{cmd} {calls:.2f}" for cmd, calls in list(result["by command"].items())[:8])
                print(
                    f"- {name}: {result['round trips']:.2f} round trips, {result['commands']:.2f} commands "
                    f"({top}); {result['finished']} finished"
                )


if __name__ == "__main__":
    main()
