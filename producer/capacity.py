"""How many more jobs fit in the queue's Redis, from the measured size of the jobs it holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from shared.keys import KEYS, Keys

logger = logging.getLogger(__name__)

#: At most this many job hashes are measured with ``MEMORY USAGE``.
SAMPLE_JOBS = 50
#: A queued job also costs its id in the queue's list: listpack entry header and backlen.
LIST_ENTRY_OVERHEAD = 3


@dataclass(frozen=True)
class Capacity:
    """A prediction of how many more queued jobs fit before Redis refuses writes."""

    sampled: int
    bytes_per_job: float | None
    free_bytes: int | None
    jobs_that_fit: int | None
    basis: str


def _sample_job_ids(conn: Redis, queues: list[str], keys: Keys) -> list[str]:
    ids: list[str] = []
    for name in queues:
        raw = conn.lrange(keys.queue(name), 0, SAMPLE_JOBS - 1)
        ids.extend(item.decode() if isinstance(item, bytes) else str(item) for item in raw)
        if len(ids) >= SAMPLE_JOBS:
            break
    if len(ids) < SAMPLE_JOBS:
        # No backlog: measure recent jobs kept in the finished registries instead.
        for name in queues:
            raw = conn.zrange(keys.finished(name), 0, SAMPLE_JOBS - 1)
            ids.extend(item.decode() if isinstance(item, bytes) else str(item) for item in raw)
            if len(ids) >= SAMPLE_JOBS:
                break
    return ids[:SAMPLE_JOBS]


def job_capacity(
    conn: Redis, depths: Mapping[str, Mapping[str, int]], info: Mapping[str, Any], keys: Keys = KEYS
) -> Capacity:
    """Measure up to :data:`SAMPLE_JOBS` job hashes and divide the free memory by their mean size."""
    queues = sorted(depths, key=lambda name: -depths[name].get("queued", 0))
    sizes = []
    for job_id in _sample_job_ids(conn, queues, keys):
        try:
            size = conn.memory_usage(keys.job(job_id), samples=0)
        except ResponseError as exc:
            logger.debug("MEMORY USAGE refused: %s", exc)
            break
        if size:
            sizes.append(int(size) + len(job_id) + LIST_ENTRY_OVERHEAD)
    maxmemory = int(info.get("maxmemory", 0))
    used = int(info.get("used_memory", 0))
    per_job = sum(sizes) / len(sizes) if sizes else None
    if not maxmemory:
        return Capacity(
            len(sizes), per_job, None, None, "no maxmemory is set: only the machine's memory limits the queue"
        )
    free = max(maxmemory - used, 0)
    if per_job is None:
        return Capacity(0, None, free, None, "no job in Redis to measure yet")
    return Capacity(
        len(sizes),
        per_job,
        free,
        int(free // per_job),
        f"(maxmemory - used_memory) / mean MEMORY USAGE of {len(sizes)} job hashes, plus the queue entry",
    )
