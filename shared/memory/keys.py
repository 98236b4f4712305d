"""``probe key``: explain the ``MEMORY USAGE`` of string keys from Redis internals."""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from shared.connections.identity import TITLES
from shared.connections.pools import own_pool
from shared.memory.model import key_breakdown
from shared.memory.snapshot import ProbeError, server_profile

logger = logging.getLogger(__name__)


def scratch_client(conn: Redis, db: int) -> Redis:
    """A client of the same server on database ``db``."""
    return Redis(connection_pool=own_pool(conn, db=db))


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def explain(conn: Redis, key: str, *, shared_integers: bool = True) -> dict[str, Any]:
    """The breakdown of one existing string key next to what the server reports."""
    kind = _text(conn.type(key))
    if kind == "none":
        raise ProbeError(f"no such key: {key!r}")
    if kind != "string":
        raise ProbeError(f"{key!r} is a {kind}: the breakdown covers string keys")
    profile = server_profile(conn)
    value = _text(conn.get(key))
    ttl = int(conn.ttl(key))
    model = key_breakdown(profile, key, value, ttl=ttl > 0, shared_integers=shared_integers)
    row = model.as_dict()
    row.update(
        {
            "memory_usage": int(conn.memory_usage(key, samples=0) or 0),
            "model_memory_usage": model.memory_usage,
            "encoding": _text(conn.object("encoding", key)),
            "model_encoding": model.encoding,
            "ttl": ttl,
            "redis_version": profile.version,
            "server": f"{TITLES.get(profile.family, profile.family)} {profile.version}",
            "allocator": profile.allocator,
        }
    )
    row["memory_usage_overhead"] = int(row["memory_usage"]) - model.logical  # type: ignore[call-overload]
    return row


def probe_keys(
    conn: Redis,
    *,
    keys: list[str] = (),  # type: ignore[assignment]
    pairs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ttl: int | None = None,
    scratch_db: int = 15,
) -> list[dict[str, Any]]:
    """Explain existing ``keys``; write ``pairs`` into an empty scratch database, explain and delete them."""
    shared = "lru" not in _policy(conn) and "lfu" not in _policy(conn)
    rows = [explain(conn, key, shared_integers=shared) for key in keys]
    if not pairs:
        return rows
    scratch = scratch_client(conn, scratch_db)
    try:
        if scratch.dbsize():
            raise ProbeError(f"scratch database {scratch_db} is not empty")
        try:
            for key, value in pairs:
                scratch.set(key, value, ex=ttl)
                rows.append(explain(scratch, key, shared_integers=shared))
        finally:
            scratch.delete(*[key for key, _ in pairs])
    finally:
        scratch.close()
        scratch.connection_pool.disconnect()
    return rows


def _policy(conn: Redis) -> str:
    return str(conn.info("memory").get("maxmemory_policy", "noeviction"))
