"""Celery: the app ``celery -A bench.peers.queues.celery_app worker`` loads, and its tasks.

The broker is Redis (``BENCH_REDIS_URL``); everything else is Celery's default: no result
backend (results are not stored), prefetch multiplier 4, acks after delivery (``acks_late``
off), mingle, gossip and heartbeats on.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.peers.stamps import stamp

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])


@app.task
def noop(index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


@app.task
def io(index: int) -> None:
    """A 10 ms I/O job."""
    start = time.time()
    time.sleep(0.01)
    stamp(index, start)


TASKS = {"noop": noop, "io": io}


class Producer:
    """Sends with ``task.delay``."""

    def send(self, kind: str, index: int) -> None:
        TASKS[kind].delay(index)

    def close(self) -> None:
        app.close()


def producer(url: str) -> Producer:
    """A producer for this app (its broker URL is the environment's)."""
    return Producer()
