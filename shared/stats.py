"""Counters, histograms and samples kept in Redis, so every process adds to the same figures.

Workers are separate processes and the producer may serve from several (any WSGI server's
worker processes), so in-process counters would each see a part. The producer's enqueue path
and the consumer's callbacks write here with ``HINCRBY``; ``/metrics`` and the dashboard read
the totals back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from shared.connections import deferred
from shared.constants import (
    ALL_QUEUES,
    LOCK_STATS_FIELDS,
    MEMORY_SAMPLES_MAX,
    STATS_WINDOW_SECONDS,
)
from shared.keys import KEYS, Keys
from shared.spaces import Space

logger = logging.getLogger(__name__)

JOB_EVENTS = ("enqueued", "finished", "failed", "retried")
LOCK_EVENTS = LOCK_STATS_FIELDS
REGISTRIES = ("queued", "started", "deferred", "scheduled", "finished", "failed", "canceled")

#: Upper bounds (seconds) of the histogram buckets; a last ``+Inf`` bucket is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def bounds(key: str) -> tuple[float, ...]:
    """The bucket bounds of the histogram stored under ``key``."""
    return LATENCY_BUCKETS if key.endswith("enqueue_latency") else DURATION_BUCKETS


def _bucket(value: float, bounds: Sequence[float]) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


def _observe(pipe: Any, key: str, queue: str, seconds: float) -> None:
    seconds = max(seconds, 0.0)
    pipe.hincrby(key, f"{queue}:b{_bucket(seconds, bounds(key))}", 1)
    pipe.hincrbyfloat(key, f"{queue}:sum", seconds)
    pipe.hincrby(key, f"{queue}:count", 1)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


class PendingHistogram:
    """Observations kept in this process until :meth:`flush` adds them to Redis in one round trip.

    For hot paths that must not pay a round trip per observation (the producer's enqueue).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._fields: dict[str, float] = {}
        self._bounds = bounds(key)
        self._names: dict[str, tuple[str, str]] = {}

    def observe(self, queue: str, seconds: float) -> None:
        """Add one observation of ``seconds`` for ``queue``."""
        seconds = max(seconds, 0.0)
        bucket = f"{queue}:b{bisect_left(self._bounds, seconds)}"
        sum_field, count_field = self._names.get(queue) or self._names.setdefault(
            queue, (f"{queue}:sum", f"{queue}:count")
        )
        with self._lock:
            fields = self._fields
            fields[bucket] = fields.get(bucket, 0.0) + 1.0
            fields[sum_field] = fields.get(sum_field, 0.0) + seconds
            fields[count_field] = fields.get(count_field, 0.0) + 1.0

    def flush(self, conn: Redis) -> int:
        """Write the pending observations; on a Redis error they stay pending. Returns fields written."""
        with self._lock:
            fields, self._fields = self._fields, {}
        if not fields:
            return 0
        try:
            with conn.pipeline(transaction=False) as pipe:
                for name, amount in fields.items():
                    if name.endswith(":sum"):
                        pipe.hincrbyfloat(self.key, name, amount)
                    else:
                        pipe.hincrby(self.key, name, int(amount))
                pipe.execute()
        except RedisError:
            with self._lock:
                for name, amount in fields.items():
                    self._fields[name] = self._fields.get(name, 0.0) + amount
            raise
        return len(fields)


def record_finished(
    conn: Redis,
    queue: str,
    *,
    enqueued_at: datetime | None,
    started_at: datetime | None,
    ended_at: datetime | None,
    now: float | None = None,
    keys: Keys = KEYS,
) -> None:
    """Count one job finished: the counter, its duration and wait, and this minute's throughput.

    Sent in one pipeline, or, inside the worker's success path, with its next round trip
    (:mod:`shared.connections.deferred`).
    """
    minute_key = keys.finished_minute(int((now or time.time()) // 60))
    commands = deferred.Commands()
    commands.hincrby(keys.job_stats, f"{queue}:finished", 1)
    _record_times(commands, keys, queue, enqueued_at, started_at, ended_at)
    commands.hincrby(minute_key, queue, 1)
    commands.expire(minute_key, STATS_WINDOW_SECONDS + 120)
    deferred.write(conn, commands)


def record_failed(
    conn: Redis,
    queue: str,
    *,
    will_retry: bool,
    enqueued_at: datetime | None,
    started_at: datetime | None,
    ended_at: datetime | None,
    keys: Keys = KEYS,
) -> None:
    """Count one failed attempt: ``retried`` when another attempt follows, else ``failed``."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.job_stats, f"{queue}:{'retried' if will_retry else 'failed'}", 1)
        _record_times(pipe, keys, queue, enqueued_at, started_at, ended_at)
        pipe.execute()


def _record_times(
    pipe: Any,
    keys: Keys,
    queue: str,
    enqueued_at: datetime | None,
    started_at: datetime | None,
    ended_at: datetime | None,
) -> None:
    duration = _seconds_between(started_at, ended_at)
    if duration is not None:
        _observe(pipe, keys.duration, queue, duration)
    wait = _seconds_between(enqueued_at, started_at)
    if wait is not None:
        _observe(pipe, keys.wait, queue, wait)


def _split(field: bytes | str) -> tuple[str, str]:
    text = field.decode() if isinstance(field, bytes) else field
    queue, _, name = text.rpartition(":")
    return queue, name


def job_counters(conn: Redis, keys: Keys = KEYS) -> dict[str, dict[str, int]]:
    """``{queue: {event: count}}`` for every queue that has counted something."""
    counters: dict[str, dict[str, int]] = {}
    for field, value in conn.hgetall(keys.job_stats).items():
        queue, event = _split(field)
        counters.setdefault(queue, dict.fromkeys(JOB_EVENTS, 0))[event] = int(value)
    return counters


@dataclass(frozen=True)
class Histogram:
    """One queue's histogram: cumulative counts per upper bound (the last is ``inf``)."""

    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


def histograms(conn: Redis, key: str) -> dict[str, Histogram]:
    """Every queue's histogram stored under ``key``."""
    raw: dict[str, dict[str, str]] = {}
    for field, value in conn.hgetall(key).items():
        queue, name = _split(field)
        raw.setdefault(queue, {})[name] = value.decode() if isinstance(value, bytes) else str(value)
    result = {}
    for queue, values in raw.items():
        cumulative = 0
        buckets = []
        for index, bound in enumerate((*bounds(key), float("inf"))):
            cumulative += int(values.get(f"b{index}", 0))
            buckets.append((bound, cumulative))
        result[queue] = Histogram(tuple(buckets), float(values.get("sum", 0)), int(values.get("count", 0)))
    return result


def finished_per_minute(
    conn: Redis, minutes: int = 60, now: float | None = None, keys: Keys = KEYS
) -> list[tuple[int, int]]:
    """``(unix minute, jobs finished)`` for the last ``minutes`` minutes, oldest first, all queues."""
    current = int((now or time.time()) // 60)
    stamps = list(range(current - minutes + 1, current + 1))
    with conn.pipeline(transaction=False) as pipe:
        for stamp in stamps:
            pipe.hvals(keys.finished_minute(stamp))
        values = pipe.execute()
    return [(stamp, sum(int(v) for v in vals)) for stamp, vals in zip(stamps, values, strict=True)]


def lock_stats(conn: Redis, keys: Keys = KEYS) -> dict[str, int]:
    """The lock's counters (acquired, contended, failed, released, extended, lost); 0 when unset."""
    raw = conn.hgetall(keys.lock_stats)
    stats = dict.fromkeys(LOCK_EVENTS, 0)
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            stats[name] = int(value)
        except ValueError:
            logger.debug("lock stat %s is not an integer: %r", name, value)
    return stats


def queue_names(conn: Redis, extra: Iterable[str] = ALL_QUEUES, keys: Keys = KEYS) -> list[str]:
    """Our queues plus every queue RQ knows on this Redis (in this namespace), sorted."""
    names = set(extra)
    for key in conn.smembers(keys.queues):
        names.add(keys.queue_name(key.decode() if isinstance(key, bytes) else key))
    return sorted(names)


def queue_depths(
    conn: Redis, queues: Iterable[str] | None = None, keys: Keys = KEYS
) -> dict[str, dict[str, int]]:
    """``{queue: {registry: jobs}}``: the queued list and each registry, in one round trip."""
    names = list(queues) if queues is not None else queue_names(conn, keys=keys)
    registries = (keys.started, keys.deferred, keys.scheduled, keys.finished, keys.failed, keys.canceled)
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(keys.queue(name))
            for registry in registries:
                pipe.zcard(registry(name))
        counts = pipe.execute()
    width = 1 + len(registries)
    return {
        name: dict(zip(REGISTRIES, (int(c) for c in counts[i * width : (i + 1) * width]), strict=True))
        for i, name in enumerate(names)
    }


MEMORY_FIELDS = ("used_memory", "used_memory_peak", "used_memory_rss", "maxmemory")


def record_memory_sample(conn: Redis, interval: float, now: float | None = None, keys: Keys = KEYS) -> bool:
    """Store one ``INFO memory`` sample unless another process stored one in the last ``interval``.

    Keeps the last :data:`STATS_WINDOW_SECONDS` and at most :data:`MEMORY_SAMPLES_MAX` samples.
    """
    stamp = now or time.time()
    if interval > 0 and not conn.set(
        keys.memory_sampler, str(stamp), nx=True, px=max(1, int(interval * 1000))
    ):
        return False
    info = conn.info("memory")
    sample = {"t": round(stamp, 3), **{name: int(info.get(name, 0)) for name in MEMORY_FIELDS}}
    with conn.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.memory_samples, {json.dumps(sample, separators=(",", ":")): stamp})
        pipe.zremrangebyscore(keys.memory_samples, "-inf", stamp - STATS_WINDOW_SECONDS)
        pipe.zremrangebyrank(keys.memory_samples, 0, -MEMORY_SAMPLES_MAX - 1)
        pipe.execute()
    return True


def memory_samples(
    conn: Redis, seconds: float = STATS_WINDOW_SECONDS, now: float | None = None, keys: Keys = KEYS
) -> list[dict[str, Any]]:
    """Samples of the last ``seconds``, oldest first."""
    since = (now or time.time()) - seconds
    samples: list[dict[str, Any]] = []
    for raw in conn.zrangebyscore(keys.memory_samples, since, "+inf"):
        try:
            samples.append(json.loads(str(raw.decode() if isinstance(raw, bytes) else raw)))
        except ValueError:
            logger.debug("skipping a malformed memory sample: %r", raw)
    return samples


def depths_of(spaces: Sequence[Space]) -> dict[str, dict[str, int]]:
    """:func:`queue_depths` summed over namespaces (a queue spread over a cluster counts once)."""
    total: dict[str, dict[str, int]] = {}
    for space in spaces:
        for queue, counts in queue_depths(space.client, keys=space.keys).items():
            into = total.setdefault(queue, dict.fromkeys(REGISTRIES, 0))
            for registry, count in counts.items():
                into[registry] += count
    return dict(sorted(total.items()))


def counters_of(spaces: Sequence[Space]) -> dict[str, dict[str, int]]:
    """:func:`job_counters` summed over namespaces."""
    total: dict[str, dict[str, int]] = {}
    for space in spaces:
        for queue, counts in job_counters(space.client, space.keys).items():
            into = total.setdefault(queue, dict.fromkeys(JOB_EVENTS, 0))
            for event, count in counts.items():
                into[event] = into.get(event, 0) + count
    return total


def histograms_of(spaces: Sequence[Space], kind: str) -> dict[str, Histogram]:
    """The ``duration`` or ``wait`` histograms of every queue, summed over namespaces."""
    total: dict[str, Histogram] = {}
    for space in spaces:
        for queue, h in histograms(space.client, getattr(space.keys, kind)).items():
            before = total.get(queue)
            if before is None:
                total[queue] = h
                continue
            pairs = zip(before.buckets, h.buckets, strict=True)
            buckets = tuple((bound, a + b) for (bound, a), (_, b) in pairs)
            total[queue] = Histogram(buckets, before.total + h.total, before.count + h.count)
    return total


def finished_per_minute_of(
    spaces: Sequence[Space], minutes: int = 60, now: float | None = None
) -> list[tuple[int, int]]:
    """:func:`finished_per_minute` summed over namespaces."""
    now = now or time.time()
    total: list[tuple[int, int]] = []
    for space in spaces:
        rows = finished_per_minute(space.client, minutes, now=now, keys=space.keys)
        total = rows if not total else [(m, a + b) for (m, a), (_, b) in zip(total, rows, strict=True)]
    return total


def lock_stats_of(spaces: Sequence[Space]) -> dict[str, int]:
    """:func:`lock_stats` summed over namespaces (and the home slot)."""
    total = dict.fromkeys(LOCK_EVENTS, 0)
    for space in spaces:
        for event, count in lock_stats(space.client, space.keys).items():
            total[event] = total.get(event, 0) + count
    return total
