"""Memory probes on a live Redis: what a server holds now, and how many more keys fit.

The model itself (allocator classes, per-key costs, the fill replay) is in
:mod:`shared.memory.model`; fills, sweeps and the watch loop are in :mod:`shared.memory.fill`.
Every probe speaks over one dedicated connection: that connection's own buffers are part of
``used_memory``, and the capacity model treats it as the connection that will write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from shared.exceptions import ArchiveError
from shared.memory.model import Profile, Table, key_breakdown, profile_for, simulate_fill

logger = logging.getLogger(__name__)

#: The reply buffer a connection settles to once the server's cron has shrunk it (7.0+).
SETTLED_REPLY_BUFFER = 1024


class ProbeError(ArchiveError):
    """A probe cannot run against this server or with these arguments."""


def client_info(conn: Redis) -> dict[str, str]:
    """``CLIENT INFO`` of this connection as a dict."""
    line = conn.execute_command("CLIENT", "INFO")  # type: ignore[no-untyped-call]
    text = line.decode() if isinstance(line, bytes) else str(line)
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def _tables(stats: dict[str, Any], db: int, keys: int, expires: int) -> tuple[Table, Table]:
    """Bucket counts of the main and expires dicts from ``MEMORY STATS`` (both tables while rehashing)."""
    entry = stats.get(f"db.{db}") or {}
    main_bytes = int(entry.get("overhead.hashtable.main", 0))
    exp_bytes = int(entry.get("overhead.hashtable.expires", 0))
    main_slots = (main_bytes - keys * (24 + 16)) // 8 if keys else 0
    exp_slots = (exp_bytes - expires * 24) // 8 if expires else 0
    return _table(main_slots, keys), _table(exp_slots, expires)


def _table(slots: int, used: int) -> Table:
    if slots <= 0:
        return Table(0, used)
    new = 1 << (slots.bit_length() - 1)
    old = slots - new
    # A rehash in progress: the server's cron finishes it within one tick.
    return Table(new, used, old, 0)


@dataclass
class Snapshot:
    """What the capacity model reads from a server, over the connection that will write."""

    version: str
    allocator: str
    used_memory: int
    maxmemory: int
    policy: str
    not_counted: int
    rss: int
    fragmentation_ratio: float
    db: int
    keys: int
    expires: int
    main: Table
    expires_table: Table
    latency_tracking: bool
    set_histogram: bool
    reply_buffer: int
    query_buffer: int
    profile: Profile = field(repr=False, default_factory=lambda: Profile("0"))
    #: The reply buffer the writes will see; :func:`settle` sets it from the live connection.
    settled_reply_buffer: int = SETTLED_REPLY_BUFFER

    @property
    def baseline(self) -> int:
        """``used_memory`` less what INFO held while answering, this connection's reply buffer settled."""
        base = self.used_memory - self.profile.info_transient
        if self.profile.reply_buffer_resizing:
            base -= self.reply_buffer - self.settled_reply_buffer
        return base

    def figures(self) -> dict[str, Any]:
        """The ``INFO memory`` figures people look at."""
        return {
            "used_memory": self.used_memory,
            "used_memory_rss": self.rss,
            "mem_fragmentation_ratio": self.fragmentation_ratio,
            "maxmemory": self.maxmemory,
            "maxmemory_policy": self.policy,
            "keys": self.keys,
        }


def _latency_tracking(conn: Redis, major: int) -> bool:
    if major < 7:
        return False
    try:
        value = conn.config_get("latency-tracking").get("latency-tracking", "yes")
    except ResponseError:
        return True
    return str(value) == "yes"


def server_profile(conn: Redis) -> Profile:
    """The model profile of the server behind ``conn`` (version, allocator, latency tracking)."""
    version = str(conn.info("server")["redis_version"])
    allocator = str(conn.info("memory").get("mem_allocator", "jemalloc"))
    return profile_for(version, allocator, _latency_tracking(conn, int(version.split(".")[0])))


def snapshot(conn: Redis) -> Snapshot:
    """Read the server's memory state; ``conn`` must be a single-connection client (see :func:`dedicated`)."""
    server = conn.info("server")
    version = str(server["redis_version"])
    major = int(version.split(".")[0])
    tracking = _latency_tracking(conn, major)
    db = int(conn.connection_pool.connection_kwargs.get("db", 0) or 0)
    # Every command of the probe runs once first: a 7.0 server allocates a latency
    # histogram at a command's first call, and that must not land between the readings.
    for _ in range(2):
        conn.info("keyspace")
        stats = conn.memory_stats()
        histograms = conn.info("latencystats") if tracking else {}
        client_info(conn)
        conn.info("memory")
    space = conn.info("keyspace").get(f"db{db}", {})
    keys, expires = int(space.get("keys", 0)), int(space.get("expires", 0))
    stats = conn.memory_stats()
    main, exp = _tables(stats, db, keys, expires)
    for _ in range(5):
        before = client_info(conn)
        mem = conn.info("memory")
        after = client_info(conn)
        if before.get("rbs") == after.get("rbs") and before.get("qbuf-free") == after.get("qbuf-free"):
            break
    allocator = str(mem.get("mem_allocator", "jemalloc"))
    snap = Snapshot(
        version=version,
        allocator=allocator,
        used_memory=int(mem["used_memory"]),
        maxmemory=int(mem.get("maxmemory", 0)),
        policy=str(mem.get("maxmemory_policy", "noeviction")),
        not_counted=int(mem.get("mem_not_counted_for_evict", 0)),
        rss=int(mem.get("used_memory_rss", 0)),
        fragmentation_ratio=float(mem.get("mem_fragmentation_ratio", 0.0)),
        db=db,
        keys=keys,
        expires=expires,
        main=main,
        expires_table=exp,
        latency_tracking=tracking,
        set_histogram="latency_percentiles_usec_set" in histograms,
        reply_buffer=int(after.get("rbs", 0)),
        query_buffer=int(after.get("qbuf", 0)) + int(after.get("qbuf-free", 0)),
    )
    snap.profile = profile_for(version, allocator, tracking)
    return snap


def key_lengths(pattern: str) -> Callable[[int], int]:
    """``i -> len(pattern with {i} replaced)`` in bytes."""
    if pattern.count("{i}") != 1:
        raise ProbeError("the key pattern must contain {i} exactly once, e.g. 'key{i}'")
    fixed = len(pattern.replace("{i}", "").encode())
    return lambda i: fixed + len(str(i))


@dataclass
class Prediction:
    """How many more ``SET`` commands of a pattern succeed before the first OOM refusal."""

    predicted_keys: int
    low: int
    high: int
    reason: str
    maxmemory: int
    baseline: int
    per_key: int
    windows: list[dict[str, int]]
    expansions: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(
    snap: Snapshot,
    pattern: str,
    value: str,
    ttl: int | None = None,
    *,
    maxmemory: int | None = None,
    pipelined: bool = False,
) -> Prediction:
    """Predict the keys of ``pattern`` that fit (``{i}`` counts from 1) with their value and TTL.

    ``pipelined``: the writes come in batches; every command but a batch's first runs while
    the connection waits in the server's pending-write list (one list node), so the point
    prediction and ``low`` count that node and ``high`` does not.
    """
    limit = maxmemory if maxmemory is not None else snap.maxmemory
    if limit <= 0:
        raise ProbeError("the server has no maxmemory: pass --maxmemory to predict against a limit")
    if limit <= snap.baseline:
        raise ProbeError(f"maxmemory {limit} is not above what the server already uses ({snap.baseline})")
    lengths = key_lengths(pattern)
    shared = not ("lru" in snap.policy or "lfu" in snap.policy)
    common: dict[str, Any] = {
        "key_length": lengths,
        "value": value,
        "ttl": ttl,
        "used_memory": snap.baseline,
        "maxmemory": limit,
        "main": snap.main,
        "expires": snap.expires_table,
        "not_counted": snap.not_counted,
        "shared_integers": shared,
        "first_set_histogram": snap.latency_tracking and not snap.set_histogram,
    }
    node = snap.profile.dict_entry if pipelined else 0  # a listNode is 24 bytes, like a dict entry
    point = simulate_fill(snap.profile, retain_old_tables=False, pending_reply=node, **common)
    high = simulate_fill(snap.profile, retain_old_tables=False, **common) if node else point
    # Pipelined fills have stopped up to ~250 bytes short of the one-node figure (a few keys):
    # ``low`` keeps a 512-byte margin for that batch state.
    # Which old tables outlive the OOM depends on timing, and a retained main table can stop
    # the expires dict from growing: the lowest of the retained combinations bounds them all.
    margin = node + 512 if node else 0
    combos = [frozenset({"main", "expires"}), frozenset({"main"}), frozenset({"expires"})]
    lows = [simulate_fill(snap.profile, retain_old_tables=c, pending_reply=margin, **common) for c in combos]
    low = min(lows, key=lambda r: r.keys)
    open_windows = [w for w in high.windows if w["from_key"] <= high.keys + 1 <= w["to_key"]]
    if snap.main.old or snap.expires_table.old:
        reason = "a rehash is in progress now: until it ends both tables are allocated"
    elif not open_windows:
        reason = "deterministic: no hash-table rehash is running when memory runs out"
        if low.keys != high.keys:
            reason += "; a pipelined command may fit where the batch's first command would not"
    else:
        sizes = ", ".join(f"{w['table_bytes']} bytes" for w in open_windows) or "an old table"
        reason = (
            f"memory runs out while a rehash may still run ({sizes} freed when it ends): "
            "the server's cron (hz) usually ends it first, giving the higher count; "
            "the lower count if writes outrun it"
        )
    per_key = key_breakdown(snap.profile, pattern.replace("{i}", "1"), value, ttl=ttl is not None).charged
    return Prediction(
        predicted_keys=point.keys,
        low=min(low.keys, high.keys),
        high=max(low.keys, high.keys),
        reason=reason,
        maxmemory=limit,
        baseline=snap.baseline,
        per_key=per_key,
        windows=open_windows,
        expansions=high.expansions,
    )


def settle(conn: Redis, snap: Snapshot, timeout: float = 12.0) -> int:
    """Wait until this connection's reply buffer has settled (7.0+) and rebase the snapshot on it.

    A 7.0 server shrinks a connection's 16 KiB reply buffer at a cron tick to fit the
    largest reply since the last peak reset (at least 1 KiB); below 2 KiB it never shrinks
    again while replies stay small, so a fill does not move it.
    """
    rbs = int(client_info(conn).get("rbs", 0))
    if snap.profile.reply_buffer_resizing:
        deadline = time.monotonic() + timeout
        stable_since = time.monotonic()
        # The cron resizes at most once a tick (hz 10): a size held for 3 ticks is settled.
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = int(client_info(conn).get("rbs", 0))
            if now != rbs:
                rbs, stable_since = now, time.monotonic()
            elif rbs < 2 * SETTLED_REPLY_BUFFER and time.monotonic() - stable_since >= 0.3:
                break
        else:
            raise ProbeError(f"the connection's reply buffer did not settle (rbs={rbs})")
    snap.settled_reply_buffer = rbs
    return rbs
