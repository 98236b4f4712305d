"""Memory probes on a live Redis: what a server holds now, and how many more keys fit.

The model itself is in :mod:`shared.memory.model` and :mod:`shared.memory.replay` (Redis) and
:mod:`shared.memory.valkey` and :mod:`shared.memory.valkey_table` (Valkey 8.1+); predictions
from a snapshot are in :mod:`shared.memory.predict`; fills, sweeps and the watch loop are in
:mod:`shared.memory.fill`.
Every probe speaks over one dedicated connection: that connection's own buffers are part of
``used_memory``, and the capacity model treats it as the connection that will write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from shared.connections.identity import ServerIdentity, identity_from_info
from shared.exceptions import ArchiveError
from shared.memory import valkey, valkey_table
from shared.memory.model import ALLOCATORS, Profile, profile_for
from shared.memory.replay import Table

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
    profile: Profile = field(repr=False, default_factory=lambda: Profile("0"))
    #: The reply buffer the writes will see; :func:`settle` sets it from the live connection.
    settled_reply_buffer: int = SETTLED_REPLY_BUFFER
    #: Redis or Valkey, with the server's own version.
    identity: ServerIdentity = field(default_factory=lambda: ServerIdentity("redis", "0", "0"))
    #: Valkey 8.1+: both hash tables and the hash seed when ``hash-seed`` is set.
    valkey: valkey_table.ValkeyState | None = field(repr=False, default=None)

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


def _latency_tracking(conn: Redis, major: int, is_valkey: bool = False) -> bool:
    if major < 7 and not is_valkey:
        return False
    try:
        value = conn.config_get("latency-tracking").get("latency-tracking", "yes")
    except ResponseError:
        return True
    return str(value) == "yes"


def _profile(conn: Redis, identity: ServerIdentity, allocator: str, tracking: bool) -> Profile:
    """The profile; a Valkey built with jemalloc is asked for jemalloc's quantum (8 when vendored)."""
    ask = identity.is_valkey and allocator.startswith("jemalloc") and allocator not in ALLOCATORS
    quantum = _jemalloc_quantum(conn) if ask else 16
    return profile_for(identity.version, allocator, tracking, identity.family, quantum)


def _jemalloc_quantum(conn: Redis) -> int:
    """jemalloc's quantum from ``MEMORY MALLOC-STATS`` (8 where Valkey vendors it, 16 by default)."""
    try:
        text = conn.execute_command("MEMORY", "MALLOC-STATS")  # type: ignore[no-untyped-call]
    except ResponseError:
        return 8
    text = text.decode() if isinstance(text, bytes) else str(text)
    for line in text.splitlines():
        if line.strip().lower().startswith("quantum size:"):
            return int(line.split(":")[1])
    return 8


def server_profile(conn: Redis, allocator: str | None = None) -> Profile:
    """The model profile of the server behind ``conn`` (family, version, allocator, latency tracking).

    ``allocator`` overrides what ``mem_allocator`` says (``libc``, ``jemalloc``, ``jemalloc-q8``),
    for a server whose allocator was swapped under it (``LD_PRELOAD``).
    """
    identity = identity_from_info(conn.info("server"))
    found = allocator or str(conn.info("memory").get("mem_allocator", "jemalloc"))
    return _profile(conn, identity, found, _latency_tracking(conn, identity.major, identity.is_valkey))


def snapshot(conn: Redis, allocator: str | None = None) -> Snapshot:
    """Read the server's memory state; ``conn`` must be a single-connection client (see :func:`dedicated`).

    ``allocator``: see :func:`server_profile`.
    """
    identity = identity_from_info(conn.info("server"))
    version = identity.version
    tracking = _latency_tracking(conn, identity.major, identity.is_valkey)
    seed = _hash_seed(conn) if identity.is_valkey else None
    # Before the readings: asking for jemalloc's quantum runs a command of its own.
    found = allocator or str(conn.info("memory").get("mem_allocator", "jemalloc"))
    profile = _profile(conn, identity, found, tracking)
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
    state = _valkey_state(conn, stats, db, keys, expires, seed) if identity.is_valkey else None
    for _ in range(5):
        before = client_info(conn)
        mem = conn.info("memory")
        after = client_info(conn)
        if before.get("rbs") == after.get("rbs") and before.get("qbuf-free") == after.get("qbuf-free"):
            break
    snap = Snapshot(
        version=version,
        allocator=found,
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
    )
    snap.profile = profile
    snap.identity = identity
    snap.valkey = state
    return snap


def _hash_seed(conn: Redis) -> bytes | None:
    """Valkey's hash seed when ``hash-seed`` fixes it (it is random per process otherwise)."""
    try:
        text = str(conn.config_get("hash-seed").get("hash-seed", "") or "")
    except ResponseError:
        return None
    return valkey.seed_from_string(text) if text else None


#: Keys a snapshot hashes itself to count a non-empty database's child buckets exactly.
EXACT_KEYS_LIMIT = 200_000


def _valkey_state(
    conn: Redis, stats: dict[str, Any], db: int, keys: int, expires: int, seed: bytes | None
) -> valkey_table.ValkeyState:
    """Both Valkey tables from ``MEMORY STATS``; with the seed, the existing keys' hashes too."""
    entry = stats.get(f"db.{db}") or {}
    main, exp = valkey_table.tables_from_stats(
        int(entry.get("overhead.hashtable.main", valkey.STATS_FIXED_EXPIRES)),
        int(entry.get("overhead.hashtable.expires", valkey.STATS_FIXED_EXPIRES)),
        keys,
        expires,
        int(stats.get("overhead.db.hashtable.rehashing", 0)),
    )
    if seed is not None and keys <= EXACT_KEYS_LIMIT and not main.old_buckets:
        names = [bytes(k) for k in conn.scan_iter(count=1000)] if keys else []
        main.hashes = [valkey.siphash12(seed, name) for name in names]
        if main.buckets:
            main.recount()
        exp.hashes = []
        if expires:
            volatile = [name for name in names if int(conn.pttl(name)) >= 0]
            exp.hashes = [valkey.siphash12(seed, name) for name in volatile]
            if exp.buckets:
                exp.recount()
    elif main.buckets:
        # Without the seed: keep the child buckets the server reports; new ones by expectation.
        reported = main.children
        main.recount()
        main.children, main.spread = reported, 0.0
    return valkey_table.ValkeyState(main, exp, seed)


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
