"""Dramatiq: the actors ``dramatiq bench.peers.queues.dramatiq_actors`` loads, on its Redis broker.

Dramatiq's defaults: the default middleware (retries, time limit, age limit, callbacks,
pipelines, shutdown notifications), no results middleware (results are not stored), a prefetch
of twice the worker threads, and an idle consumer that polls with a backoff from 5 ms up to the
worker timeout (1 s).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.stamps import stamp

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


@dramatiq.actor
def io(index: int) -> None:
    """A 10 ms I/O job."""
    start = time.time()
    time.sleep(0.01)
    stamp(index, start)


ACTORS = {"noop": noop, "io": io}


class Producer:
    """Sends with ``actor.send``."""

    def send(self, kind: str, index: int) -> None:
        ACTORS[kind].send(index)

    def close(self) -> None:
        broker.close()


def producer(url: str) -> Producer:
    """A producer on this module's broker (its URL is the environment's)."""
    return Producer()
