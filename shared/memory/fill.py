"""Real experiments on a server: fill until OOM, sweep key or value lengths, watch memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from shared.connections import raw
from shared.connections.pools import dedicated
from shared.memory.model import key_breakdown
from shared.memory.predict import Prediction, predict
from shared.memory.snapshot import ProbeError, server_profile, settle, snapshot

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]
#: A batch stays under 4 KiB of commands, so the server's 16 KiB read buffer never grows.
BATCH_BYTES = 4000


def _is_oom(error: Exception) -> bool:
    return isinstance(error, OutOfMemoryError) or (
        isinstance(error, ResponseError) and str(error).startswith("OOM")
    )


def set_args(pattern: str, i: int, value: str, ttl: int | None) -> list[Any]:
    """``SET key value [EX ttl]`` for key number ``i``."""
    args: list[Any] = ["SET", pattern.replace("{i}", str(i)), value]
    if ttl is not None:
        args += ["EX", ttl]
    return args


def pipelined(conn: Redis, commands: list[list[Any]]) -> list[Any]:
    """Send ``commands`` in one write over ``conn``'s own connection and read every reply.

    redis-py's ``pipeline()`` borrows another connection from the pool; a second
    connection has buffers of its own, so the fill pipelines by hand on the probe's.
    """
    connection = conn.connection
    if connection is None:
        raise ProbeError("pipelined fills need a single-connection client")
    raw.send(connection, raw.pack(commands, connection))
    return raw.read(connection, len(commands))


def batch_size(pattern: str, value: str, ttl: int | None, limit: int = 100) -> int:
    """Commands per pipeline: up to ``limit`` while a batch stays under :data:`BATCH_BYTES`."""
    command = 40 + len(pattern.encode()) + 8 + len(value.encode()) + (20 if ttl is not None else 0)
    return max(1, min(limit, BATCH_BYTES // command))


def fill(
    conn: Redis,
    pattern: str,
    value: str,
    ttl: int | None = None,
    *,
    batch: int = 1,
    progress: Progress | None = None,
    limit: int = 100_000_000,
) -> tuple[int, int]:
    """SET key1, key2 ... over ``conn`` until the first OOM; return (keys before it, last index sent)."""
    i = 0
    while i < limit:
        if batch <= 1:
            i += 1
            try:
                conn.execute_command(*set_args(pattern, i, value, ttl))  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                if _is_oom(exc):
                    return i - 1, i
                raise
            if progress is not None and i % 1000 == 0:
                progress(1000)
            continue
        start = i + 1
        commands = [set_args(pattern, j, value, ttl) for j in range(start, min(start + batch, limit + 1))]
        replies = pipelined(conn, commands)
        i = start + len(replies) - 1
        for offset, reply in enumerate(replies):
            if isinstance(reply, Exception):
                if _is_oom(reply):
                    return start + offset - 1, i
                raise reply
        if progress is not None:
            progress(len(replies))
    raise ProbeError(f"no OOM after {limit} keys")


def same_server(a: Redis, b: Redis) -> bool:
    """Whether two clients reach the same server and database (by ``run_id``, else by address)."""
    ka, kb = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    if (ka.get("db", 0) or 0) != (kb.get("db", 0) or 0):
        return False
    try:
        return bool(a.info("server")["run_id"] == b.info("server")["run_id"])
    except RedisError:
        address = ("host", "port", "path")
        return all(ka.get(k) == kb.get(k) for k in address)


def check_fill_target(
    conn: Redis, *, queue: Redis | None = None, allow_queue: bool = False, force: bool = False
) -> None:
    """Refuse the queue's own Redis (unless ``allow_queue``) and a non-empty database (unless ``force``)."""
    if queue is not None and not allow_queue and same_server(conn, queue):
        raise ProbeError("refusing to fill the queue's own Redis (REDIS_URL); pass another --url")
    if conn.dbsize() and not force:
        raise ProbeError("the database is not empty: fill an empty one, or pass --force")


def capacity(
    conn: Redis,
    pattern: str,
    value: str,
    ttl: int | None = None,
    *,
    maxmemory: int | None = None,
    run_fill: bool = False,
    force: bool = False,
    queue: Redis | None = None,
    allow_queue: bool = False,
    batch: int | None = None,
    progress: Progress | None = None,
    allocator: str | None = None,
) -> dict[str, Any]:
    """Predict the capacity for a key pattern; with ``run_fill`` fill the server and compare.

    ``allocator`` overrides the server's ``mem_allocator`` for the model (see
    :func:`~shared.memory.snapshot.server_profile`).

    The fill refuses a non-empty database unless ``force``, and the queue's own Redis
    (``queue``) unless ``allow_queue``. It restores ``maxmemory`` and deletes its keys.
    """
    probe = dedicated(conn)
    try:
        if run_fill:
            check_fill_target(probe, queue=queue, allow_queue=allow_queue, force=force)
        old_maxmemory = str(probe.config_get("maxmemory").get("maxmemory", "0"))
        was_empty = probe.dbsize() == 0
        changed = False
        try:
            if maxmemory is not None and run_fill:
                probe.config_set("maxmemory", maxmemory)
                changed = True
            snap = snapshot(probe, allocator)
            if run_fill:
                settle(probe, snap)
            # Valkey 8.1+ parses a pipelined batch before running it, and what that holds at a
            # batch's start was not pinned down to the byte: its fills write one SET at a time.
            default = batch_size(pattern, value, ttl) if run_fill and snap.valkey is None else 1
            size = batch if batch is not None else default
            prediction = predict(
                snap, pattern, value, ttl, maxmemory=maxmemory, pipelined=size > 1, batch=size
            )
            result: dict[str, Any] = {
                "pattern": pattern,
                "value": value,
                "ttl": ttl,
                "redis_version": snap.version,
                "server": snap.identity.title,
                "allocator": snap.profile.allocator,
                "hash_seed": None if snap.valkey is None else snap.valkey.seed is not None,
                **prediction.as_dict(),
                "before": snap.figures(),
                "reply_buffer": {"at_snapshot": snap.reply_buffer, "settled": snap.settled_reply_buffer},
            }
            if not run_fill:
                return result
            result.update(_run_fill(probe, pattern, value, ttl, prediction, was_empty, size, progress))
            return result
        finally:
            if changed:
                probe.config_set("maxmemory", old_maxmemory)
    finally:
        probe.close()
        probe.connection_pool.disconnect()


def _run_fill(
    probe: Redis,
    pattern: str,
    value: str,
    ttl: int | None,
    prediction: Prediction,
    was_empty: bool,
    size: int,
    progress: Progress | None,
) -> dict[str, Any]:
    sent = 0
    try:
        actual, sent = fill(probe, pattern, value, ttl, batch=size, progress=progress)
        after = probe.info("memory")
        stored = probe.dbsize()
        stats = probe.memory_stats()
    finally:
        _cleanup(probe, pattern, sent, was_empty)
    return {
        "actual_keys": actual,
        "stored_keys": stored,
        "batch": size,
        "error": actual - prediction.predicted_keys,
        "inside_interval": prediction.low <= actual <= prediction.high,
        # Bytes of old hash tables still allocated when the fill stopped (a rehash in progress).
        "rehashing_at_end": int(
            stats.get("overhead.db.hashtable.rehashing", stats.get("overhead.hashtable.rehashing", 0)) or 0
        ),
        "after": {
            "used_memory": int(after["used_memory"]),
            "used_memory_rss": int(after.get("used_memory_rss", 0)),
            "mem_fragmentation_ratio": float(after.get("mem_fragmentation_ratio", 0.0)),
        },
    }


def _cleanup(probe: Redis, pattern: str, sent: int, was_empty: bool) -> None:
    if was_empty:
        probe.flushdb()
        return
    for start in range(1, sent + 1, 1000):
        names = [pattern.replace("{i}", str(i)) for i in range(start, min(start + 1000, sent + 1))]
        probe.unlink(*names)


def _used(conn: Redis) -> int:
    """``used_memory`` now."""
    return int(conn.info("memory")["used_memory"])


def _measure(scratch: Redis, key: str, value: str) -> tuple[int, int, Any]:
    """(used_memory growth, MEMORY USAGE, encoding) of one key; repeated until two growths agree.

    Other clients connecting, leaving or having their buffers resized move ``used_memory``
    at any moment; two equal readings in a row rule that out.
    """
    deltas: list[int] = []
    usage, encoding = 0, None
    for _ in range(6):
        before = _used(scratch)
        scratch.set(key, value)
        after = _used(scratch)
        usage = int(scratch.memory_usage(key) or 0)
        encoding = scratch.object("encoding", key)
        scratch.delete(key)
        deltas.append(after - before)
        if len(deltas) >= 2 and deltas[-1] == deltas[-2]:
            break
    return deltas[-1], usage, encoding


def sweep(
    conn: Redis,
    *,
    what: str = "key",
    start: int = 1,
    stop: int = 64,
    key: str = "k",
    value: str = "v",
    scratch_db: int = 15,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Write one key per length from ``start`` to ``stop`` into an empty scratch db; measure each."""
    if what not in ("key", "value"):
        raise ProbeError("sweep what must be 'key' or 'value'")
    if not 1 <= start <= stop <= 4096:
        raise ProbeError("sweep lengths must satisfy 1 <= start <= stop <= 4096")
    from shared.memory.keys import scratch_client

    scratch = scratch_client(conn, scratch_db)
    try:
        if scratch.dbsize():
            raise ProbeError(f"scratch database {scratch_db} is not empty")
        profile = server_profile(scratch)
        # A first key allocates the table (and 7.0's SET histogram); it stays for the sweep.
        scratch.set("\x00sweep", "x")
        rows = []
        for n in range(start, stop + 1):
            k = (key * n)[:n] if what == "key" else key
            v = value if what == "key" else (value * n)[:n]
            delta, usage, encoding = _measure(scratch, k, v)
            model = key_breakdown(profile, k, v)
            rows.append(
                {
                    "length": n,
                    "memory_usage": usage,
                    "model_memory_usage": model.memory_usage,
                    "used_memory_delta": delta,
                    "model_charged": model.charged,
                    "encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
                }
            )
            if progress is not None:
                progress(1)
        return rows
    finally:
        try:
            scratch.flushdb()
        finally:
            scratch.close()
            scratch.connection_pool.disconnect()


def watch(conn: Redis, interval: float = 5.0, count: int | None = None) -> Iterator[dict[str, Any]]:
    """Sample ``INFO memory`` every ``interval`` seconds: usage, percent of maxmemory, warnings."""
    n = 0
    while count is None or n < count:
        if n:
            time.sleep(interval)
        n += 1
        mem = conn.info("memory")
        used, limit = int(mem["used_memory"]), int(mem.get("maxmemory", 0))
        policy = str(mem.get("maxmemory_policy", "noeviction"))
        percent = round(100.0 * used / limit, 1) if limit else None
        warnings = []
        if percent is not None and percent >= 90:
            warnings.append(
                f"used_memory at {percent}% of maxmemory (>= 90%): writes will soon fail with OOM"
            )
        elif percent is not None and percent >= 80:
            warnings.append(f"used_memory at {percent}% of maxmemory (>= 80%)")
        if policy != "noeviction":
            warnings.append(f"EVICTING POLICY {policy}: Redis may delete queued jobs; use noeviction")
        yield {
            "time": time.time(),
            "used_memory": used,
            "maxmemory": limit,
            "percent": percent,
            "used_memory_rss": int(mem.get("used_memory_rss", 0)),
            "mem_fragmentation_ratio": float(mem.get("mem_fragmentation_ratio", 0.0)),
            "maxmemory_policy": policy,
            "warnings": warnings,
        }
