"""SAQ: the ``settings`` that ``saq bench.peers.queues.saq_settings.settings`` runs, on Redis.

SAQ's defaults but the concurrency (``BENCH_CONCURRENCY``; SAQ's own default is 10): a blocking
dequeue (``BLMOVE`` with no timeout) per concurrent slot, each job stored as a key of its own and
kept with its result for its ``ttl`` (600 s) after it ends, job status published on a channel,
stats, abort, schedule and sweep timers.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from saq import Queue

from bench.peers.stamps import stamp


async def noop(ctx: dict[str, Any], *, index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


async def io(ctx: dict[str, Any], *, index: int) -> None:
    """A 10 ms I/O job: ``await asyncio.sleep(0.01)``."""
    start = time.time()
    await asyncio.sleep(0.01)
    stamp(index, start)


def _settings() -> dict[str, Any]:
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    queue = Queue.from_url(os.environ["BENCH_REDIS_URL"])
    return {"queue": queue, "functions": [noop, io], "concurrency": concurrency}


settings = _settings()


class Producer:
    """Enqueues with ``queue.enqueue``."""

    def __init__(self, url: str) -> None:
        self.queue = Queue.from_url(url)

    async def connect(self) -> None:
        await self.queue.connect()

    async def send(self, kind: str, index: int) -> None:
        await self.queue.enqueue(kind, index=index)

    async def close(self) -> None:
        await self.queue.disconnect()


async def aproducer(url: str) -> Producer:
    """A connected producer."""
    producer = Producer(url)
    await producer.connect()
    return producer
