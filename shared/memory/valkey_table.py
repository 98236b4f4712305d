"""Valkey 8.1+'s keyspace hash table (64-byte buckets of 7 slots, child buckets) and the fill replay.

The objects the table points to are :mod:`shared.memory.valkey`'s; :mod:`shared.memory.predict`
runs the replays that make a prediction and its ``[low, high]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.memory.model import Profile
from shared.memory.replay import FillResult
from shared.memory.valkey import (
    BUCKET,
    BUCKET_DIVISOR,
    BUCKET_FACTOR,
    HARD_FILL_PERCENT,
    REHASH_NODE,
    SLOTS,
    STATS_FIXED_EXPIRES,
    STATS_FIXED_MAIN,
    TABLE_STRUCT,
    ValkeyObject,
    object_charged,
    siphash12,
    store_object,
)


def buckets_for(entries: int) -> int:
    """Buckets of a table sized for ``entries`` (``nextBucketExp``): a power of two."""
    if entries <= 0:
        return 0
    need = (entries * BUCKET_FACTOR - 1) // BUCKET_DIVISOR + 1
    return 1 << (need - 1).bit_length() if need > 1 else 1


def children_of(count: int) -> int:
    """Child buckets of a chain holding ``count`` entries: 7 fit, then 6 per bucket with a link."""
    return (count - SLOTS + 5) // 6 if count > SLOTS else 0


def _poisson_children(mean: float) -> tuple[float, float]:
    """Mean and variance of :func:`children_of` for a Poisson(``mean``) bucket (to 4 decimals of the mean)."""
    return _poisson_children_at(round(mean, 4))


@functools.lru_cache(maxsize=65536)
def _poisson_children_at(mean: float) -> tuple[float, float]:
    if mean <= 0:
        return 0.0, 0.0
    p = math.exp(-mean)
    cumulative = p
    total = total_sq = 0.0
    k = 0
    limit = int(mean + 12 * math.sqrt(mean) + 30)
    while k < limit:
        k += 1
        p *= mean / k
        cumulative += p
        c = children_of(k)
        total += p * c
        total_sq += p * c * c
    return total, max(0.0, total_sq - total * total)


@dataclass
class KeyTable:
    """A keyspace or expires table: buckets, entries, child buckets, and a rehash's old table.

    With ``hashes`` (the keys' hashes, from the seed) child buckets are counted exactly;
    without, ``children`` is the expectation and ``spread`` its standard deviation.
    """

    buckets: int = 0
    used: int = 0
    children: float = 0.0
    spread: float = 0.0
    old_buckets: int = 0
    old_children: float = 0.0
    old_until: int = 0
    exists: bool = False
    hashes: list[int] | None = None
    counts: list[int] = field(default_factory=list)

    def recount(self) -> None:
        """Child buckets for the current size (after a growth, or from known hashes)."""
        if self.hashes is not None:
            mask = self.buckets - 1
            self.counts = [0] * self.buckets
            for h in self.hashes:
                self.counts[h & mask] += 1
            self.children = float(sum(children_of(c) for c in self.counts))
            self.spread = 0.0
        else:
            mean, var = _poisson_children(self.used / self.buckets) if self.buckets else (0.0, 0.0)
            self.children = mean * self.buckets
            self.spread = math.sqrt(var * self.buckets)

    def add(self, hash_value: int | None) -> float:
        """Insert one entry; the child buckets it adds (fractional without a seed)."""
        self.used += 1
        if self.hashes is not None and hash_value is not None:
            self.hashes.append(hash_value)
            slot = hash_value & (self.buckets - 1)
            before = self.counts[slot]
            self.counts[slot] = before + 1
            added = 1.0 if before >= SLOTS and (before - SLOTS) % 6 == 0 else 0.0
            self.children += added
            return added
        expected = self.children
        self.recount()
        return self.children - expected


@dataclass(frozen=True)
class ValkeyState:
    """The keyspace's state in a snapshot: both tables and, when known, the hash seed."""

    main: KeyTable
    expires: KeyTable
    seed: bytes | None = None


def _table_bytes(profile: Profile, buckets: int) -> int:
    return profile.alloc(BUCKET * buckets) if buckets else 0


def simulate_valkey_fill(
    profile: Profile,
    *,
    key_name: Callable[[int], str],
    value: str,
    ttl: int | None,
    used_memory: int,
    maxmemory: int,
    state: ValkeyState,
    not_counted: int = 0,
    argv: Callable[[int], int],
    first_set_histogram: bool = False,
    pending_reply: int = 0,
    retain_old_tables: bool = False,
    decide_without_old: bool = False,
    sigmas: float = 0.0,
    glibc_reuse: bool = False,
    limit: int = 50_000_000,
) -> FillResult:
    """Replay ``SET key{i} value [EX ttl]`` on Valkey 8.1+ until the first OOM refusal.

    ``argv(i)`` is what the parsed command holds while it runs. ``sigmas`` moves the child
    buckets of a table without a known seed by that many standard deviations (the band of
    ``low``/``high``). With ``retain_old_tables`` an old table (and its child buckets) lives
    until the writes alone could have finished its rehash (two buckets a command); otherwise
    the rehash ends at once, as the server's cron usually makes it.
    """
    if maxmemory <= 0:
        raise ValueError("maxmemory must be set to predict a capacity")
    objects: dict[int, tuple[int, bool]] = {}
    child = profile.alloc(BUCKET)
    node = profile.alloc(REHASH_NODE)
    tables = {
        "main": _copy(state.main),
        "expires": _copy(state.expires),
    }
    used = float(used_memory)
    result = FillResult(0, used_memory)
    histogram_pending = first_set_histogram
    extra = {name: 0.0 for name in tables}  # sigmas x spread already charged

    # glibc may hand a freed 80-byte chunk (a child bucket freed by a rehash) whole to a later
    # 64-byte request, the remainder being too small to split off: such an object then costs
    # 16 bytes more. Whether it does depends on the heap's state; ``glibc_reuse`` charges it
    # for every such chunk (the bound of ``low``), otherwise it is counted in ``reusable``.
    reuse = profile.allocator == "libc"
    spare_chunks = 0.0

    def finish(name: str, table: KeyTable, i: int, force: bool) -> float:
        nonlocal spare_chunks
        if table.old_buckets and (force or i >= table.old_until):
            freed = _table_bytes(profile, table.old_buckets) + table.old_children * child + node
            if reuse:
                spare_chunks += table.old_children
            table.old_buckets, table.old_children = 0, 0.0
            return freed
        return 0.0

    def grow(name: str, table: KeyTable, i: int, now: float) -> float:
        """The insert's growth check (``hashtableExpandIfNeeded``); returns the bytes it allocates."""
        if table.old_buckets:
            return 0.0
        if not table.exists:
            table.exists = True
            table.buckets = 1
            table.recount()
            return float(profile.alloc(TABLE_STRUCT) + _table_bytes(profile, 1))
        if table.used + 1 <= SLOTS * table.buckets:
            return 0.0
        new = buckets_for(table.used + 1)
        if new <= table.buckets:
            return 0.0
        fill = (table.used + 1) / (SLOTS * table.buckets)
        if decide_without_old:
            now -= sum(
                _table_bytes(profile, t.old_buckets) + t.old_children * child + node
                for t in tables.values()
                if t.old_buckets
            )
        if fill * 100 < HARD_FILL_PERCENT and now - not_counted + BUCKET * new > maxmemory:
            return 0.0
        result.expansions.append({"table": name, "at_key": i, "from": table.buckets, "to": new})
        old_bytes = _table_bytes(profile, table.buckets) + table.children * child
        table.old_buckets, table.old_children = table.buckets, table.children
        table.old_until = i + math.ceil(table.buckets / 2)
        result.windows.append({"table_bytes": int(old_bytes), "from_key": i, "to_key": table.old_until})
        table.buckets = new
        table.recount()
        return _table_bytes(profile, new) + table.children * child + node

    for i in range(1, limit):
        key = key_name(i)
        for name, table in tables.items():
            used -= finish(name, table, i, not retain_old_tables)
        need = argv(i)
        if used + need + pending_reply - not_counted > maxmemory:
            result.keys = i - 1
            result.used_memory = int(used)
            return result
        raw = key.encode()
        main = tables["main"]
        hashed = _key_hash(state.seed, raw) if state.seed is not None else None
        used += grow("main", main, i, used + need)
        used += main.add(hashed) * child
        if len(raw) not in objects:
            stored = store_object(profile, len(raw), value, ttl is not None)
            objects[len(raw)] = (object_charged(profile, stored), _chunk64(profile, stored))
        charged, chunk64 = objects[len(raw)]
        used += charged
        if reuse and spare_chunks >= 1 and chunk64:
            spare_chunks -= 1
            result.reusable += 1
            if glibc_reuse:
                used += 16
        if ttl is not None:
            expires = tables["expires"]
            used += grow("expires", expires, i, used + need)
            used += expires.add(hashed) * child
        if sigmas:
            for name, table in tables.items():
                target = sigmas * table.spread * child
                used += target - extra[name]
                extra[name] = target
        if histogram_pending:
            used += profile.latency_histogram
            histogram_pending = False
    result.keys = limit - 1
    result.used_memory = int(used)
    return result


@functools.lru_cache(maxsize=1 << 20)
def _key_hash(seed: bytes, key: bytes) -> int:
    """:func:`siphash12`, remembered: a prediction replays the same keys several times."""
    return siphash12(seed, key)


def _chunk64(profile: Profile, obj: ValkeyObject) -> bool:
    """Whether the object is a 64-byte glibc chunk (56 usable), the size a spare 80-byte chunk serves."""
    return profile.alloc(obj.size) == 56


def _copy(table: KeyTable) -> KeyTable:
    copy = KeyTable(**{k: v for k, v in vars(table).items() if k not in ("hashes", "counts")})
    copy.hashes = list(table.hashes) if table.hashes is not None else None
    copy.counts = list(table.counts)
    return copy


def tables_from_stats(
    stats_main: int, stats_expires: int, keys: int, expires: int, rehashing: int
) -> tuple[KeyTable, KeyTable]:
    """Buckets and child buckets of both tables from ``MEMORY STATS`` (``db.N`` figures).

    ``overhead.hashtable.main`` is the kvstore and table structs, 64 bytes per bucket and
    child bucket, and 16 per key (``overhead.hashtable.expires`` the same without the 16);
    a table being rehashed adds its list node, and ``overhead.db.hashtable.rehashing`` is
    the old bucket array.
    """

    def split(stats: int, per_key: int, used: int, old_bytes: int) -> KeyTable:
        if stats <= STATS_FIXED_EXPIRES:
            return KeyTable(0, used)
        node = REHASH_NODE if old_bytes else 0
        blocks = (stats - STATS_FIXED_MAIN - per_key - node) // BUCKET - old_bytes // BUCKET
        if blocks <= 0:
            return KeyTable(0, used, exists=True)
        buckets = 1 << (blocks.bit_length() - 1)
        table = KeyTable(buckets, used, float(blocks - buckets), exists=True)
        table.old_buckets = old_bytes // BUCKET
        return table

    # A rehash in progress is (almost always) the keyspace's: the expires table grows later.
    main = split(stats_main, 16 * keys, keys, rehashing)
    exp = split(stats_expires, 0, expires, 0)
    return main, exp
