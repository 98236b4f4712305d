"""huey: the tasks ``huey_consumer bench.peers.queues.huey_tasks.huey`` runs, on ``RedisHuey``.

huey's defaults: a blocking dequeue (``BRPOP``, 1 s read timeout) and, when that comes back
empty, a polling delay from 0.1 s growing by 1.15x up to 10 s; results stored unless a task
returns ``None`` (these do); thread workers.
"""

from __future__ import annotations

import os
import time

from huey import RedisHuey

from bench.peers.stamps import stamp

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])


@huey.task()
def noop(index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


@huey.task()
def io(index: int) -> None:
    """A 10 ms I/O job."""
    start = time.time()
    time.sleep(0.01)
    stamp(index, start)


TASKS = {"noop": noop, "io": io}


class Producer:
    """Enqueues by calling the task."""

    def send(self, kind: str, index: int) -> None:
        TASKS[kind](index)

    def close(self) -> None:
        pass


def producer(url: str) -> Producer:
    """A producer for this huey (its URL is the environment's)."""
    return Producer()
