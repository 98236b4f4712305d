"""arq: the ``WorkerSettings`` that ``arq bench.peers.queues.arq_settings.WorkerSettings`` runs.

arq's defaults but the concurrency (``max_jobs`` from ``BENCH_CONCURRENCY``; arq's own default
is 10): the worker polls its queue (a sorted set) every ``poll_delay`` = 0.5 s and starts at most
``max_jobs`` jobs per poll; each job is pickled into a key of its own, runs under an in-progress
key, and its result is kept for ``keep_result`` = 3,600 s (a ``None`` result too).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.peers.stamps import stamp


async def noop(ctx: dict[str, Any], index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


async def io(ctx: dict[str, Any], index: int) -> None:
    """A 10 ms I/O job: ``await asyncio.sleep(0.01)``."""
    start = time.time()
    await asyncio.sleep(0.01)
    stamp(index, start)


class WorkerSettings:
    """What ``arq`` reads: the functions, the Redis, the concurrency."""

    functions = [noop, io]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))


class Producer:
    """Enqueues with ``ArqRedis.enqueue_job``."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def send(self, kind: str, index: int) -> None:
        await self.pool.enqueue_job(kind, index)

    async def close(self) -> None:
        await self.pool.aclose()


async def aproducer(url: str) -> Producer:
    """A producer on a pool of its own."""
    return Producer(await create_pool(RedisSettings.from_dsn(url)))
