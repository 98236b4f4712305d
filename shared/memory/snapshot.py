"""Memory probes on a live Redis: what a server holds now, and how many more keys fit.

The model itself (allocator classes, per-key costs, the fill replay) is in
:mod:`shared.memory.model`; fills, sweeps and the watch loop are in :mod:`shared.memory.fill`.
Every probe speaks over one dedicated connection: that connection's own buffers are part of
``used_memory``, and the capacity model treats it as the connection that will write.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from shared.connections.identity import ServerIdentity, identity_from_info
from shared.exceptions import ArchiveError
from shared.memory import valkey
from shared.memory.model import ALLOCATORS, Profile, Table, key_breakdown, profile_for, simulate_fill

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
    #: Redis or Valkey, with the server's own version.
    identity: ServerIdentity = field(default_factory=lambda: ServerIdentity("redis", "0", "0"))
    #: Valkey 8.1+: both hash tables and the hash seed when ``hash-seed`` is set.
    valkey: valkey.ValkeyState | None = field(repr=False, default=None)

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
        query_buffer=int(after.get("qbuf", 0)) + int(after.get("qbuf-free", 0)),
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
) -> valkey.ValkeyState:
    """Both Valkey tables from ``MEMORY STATS``; with the seed, the existing keys' hashes too."""
    entry = stats.get(f"db.{db}") or {}
    main, exp = valkey.tables_from_stats(
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
    return valkey.ValkeyState(main, exp, seed)


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
    #: Valkey on glibc: objects whose cost depends on the heap's state (see ``reason``).
    reusable: int = 0

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
    batch: int | None = None,
) -> Prediction:
    """Predict the keys of ``pattern`` that fit (``{i}`` counts from 1) with their value and TTL.

    ``pipelined``: the writes come in batches (of ``batch`` commands, from key 1); every
    command but a batch's first runs while the connection waits in the server's
    pending-write list (one list node), so the point prediction and ``low`` count that node
    and ``high`` does not. Valkey also parses a whole batch before running it.
    """
    limit = maxmemory if maxmemory is not None else snap.maxmemory
    if limit <= 0:
        raise ProbeError("the server has no maxmemory: pass --maxmemory to predict against a limit")
    if limit <= snap.baseline:
        raise ProbeError(f"maxmemory {limit} is not above what the server already uses ({snap.baseline})")
    lengths = key_lengths(pattern)
    if snap.valkey is not None:
        size = batch if batch is not None else (100 if pipelined else 1)
        return _predict_valkey(snap, snap.valkey, pattern, value, ttl, limit, size)
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
    if open_windows:
        # A table that grew inside the last window may, under load, grow later or not at all
        # (it does not grow while its previous rehash runs, then its growth may cross maxmemory):
        # one such table more than the point's count fits (seen once: +910 keys at 4 MB).
        start = min(w["from_key"] for w in open_windows)
        later = [
            simulate_fill(
                snap.profile, retain_old_tables=False, deferred=names, deferred_from=start, **common
            )
            for names in (frozenset({"main"}), frozenset({"expires"}), frozenset({"main", "expires"}))
        ]
        ceiling = max([high, *later], key=lambda r: r.keys)
    else:
        ceiling = high
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
            "the server's cron (hz) usually ends it first, giving the point count; "
            "the lower count if writes outrun it; more when a table's growth comes late"
        )
    per_key = key_breakdown(snap.profile, pattern.replace("{i}", "1"), value, ttl=ttl is not None).charged
    return Prediction(
        predicted_keys=point.keys,
        low=min(low.keys, high.keys),
        high=max(low.keys, ceiling.keys),
        reason=reason,
        maxmemory=limit,
        baseline=snap.baseline,
        per_key=per_key,
        windows=open_windows,
        expansions=high.expansions,
    )


def _predict_valkey(
    snap: Snapshot,
    state: valkey.ValkeyState,
    pattern: str,
    value: str,
    ttl: int | None,
    limit: int,
    batch: int,
) -> Prediction:
    """:func:`predict` for Valkey 8.1+ (objects with embedded keys, bucketed hash tables)."""
    profile = snap.profile
    lengths = key_lengths(pattern)
    pipelined = batch > 1

    def one(i: int) -> int:
        return valkey.command_argv(profile, lengths(i), value, ttl)

    common: dict[str, Any] = {
        "key_name": lambda i: pattern.replace("{i}", str(i)),
        "value": value,
        "ttl": ttl,
        "used_memory": snap.baseline,
        "maxmemory": limit,
        "state": state,
        "not_counted": snap.not_counted,
        "argv": valkey.batch_argv(profile, one, batch),
        "first_set_histogram": snap.latency_tracking and not snap.set_histogram,
    }
    node = profile.alloc(24) if pipelined else 0  # the pending-write list node
    seeded = state.seed is not None
    point = valkey.simulate_valkey_fill(profile, pending_reply=node, **common)
    band = 0.0 if seeded else valkey.SIGMAS
    # The server's own bookkeeping moved the end by up to two keys either way on 9.1 (reply
    # buffer resizes, the heap's state): ``high`` and ``low`` keep NOISE_MARGIN bytes for it.
    high = valkey.simulate_valkey_fill(profile, sigmas=-band, pending_reply=-valkey.NOISE_MARGIN, **common)
    # A pipelined batch is refused at its start, holding more than its parsed commands (up to
    # a query buffer more, measured): ``low`` allows 16 KiB besides them.
    margin = (node + valkey.PIPELINE_MARGIN if pipelined else 0) + valkey.NOISE_MARGIN
    lows = [
        valkey.simulate_valkey_fill(
            profile,
            retain_old_tables=True,
            decide_without_old=forced,
            sigmas=band,
            pending_reply=margin,
            glibc_reuse=True,
            **common,
        )
        for forced in (False, True)
    ]
    low = min(lows, key=lambda r: r.keys)
    # A rehash matters where either end stops inside its window.
    open_windows = [
        w for w in low.windows if any(w["from_key"] <= r.keys + 1 <= w["to_key"] for r in (low, point))
    ]
    if state.main.old_buckets or state.expires.old_buckets:
        reason = "a rehash is in progress now: until it ends both tables are allocated"
    elif open_windows:
        sizes = ", ".join(f"{w['table_bytes']} bytes" for w in open_windows)
        reason = (
            f"memory runs out while a rehash may still run ({sizes} freed when it ends): "
            "the server's cron usually ends it first, giving the higher count; the lower if writes outrun it"
        )
    else:
        reason = "deterministic: no hash-table rehash is running when memory runs out"
    if point.reusable:
        reason += (
            f"; with glibc malloc up to {point.reusable} objects may reuse the larger chunks of child "
            "buckets a rehash freed (16 bytes each), as the heap happens to be: the lower count if all do"
        )
    if not seeded:
        reason += (
            "; the hash seed is random (no hash-seed), so which keys share a bucket, and so the child "
            f"buckets, are known only on average: [low, high] allows {valkey.SIGMAS:g} standard deviations"
        )
    low_keys, high_keys = min(low.keys, high.keys, point.keys), max(low.keys, high.keys, point.keys)
    if profile.allocator == "libc" and point.expansions:
        spread = math.ceil(point.keys * valkey.GLIBC_SPREAD)
        low_keys, high_keys = low_keys - spread, high_keys + spread
        reason += (
            f"; glibc malloc: the heap's state moved real fills by up to 1% of the keys, "
            f"so [low, high] keeps {spread} keys on either side"
        )
    per_key = key_breakdown(profile, pattern.replace("{i}", "1"), value, ttl=ttl is not None).charged
    return Prediction(
        predicted_keys=point.keys,
        low=max(0, low_keys),
        high=high_keys,
        reason=reason,
        maxmemory=limit,
        baseline=snap.baseline,
        per_key=per_key,
        windows=open_windows,
        expansions=point.expansions,
        reusable=point.reusable,
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
