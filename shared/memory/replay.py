"""Replaying a fill on the Redis 7.0 model: ``SET`` after ``SET`` until the first OOM refusal.

The keyspace's ``dict`` and its rehash windows, the parsed command's arguments and the
per-key costs of :mod:`shared.memory.model`; :mod:`shared.memory.predict` runs the replays
that make a prediction and its ``[low, high]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.memory.model import MAX_LOAD_FACTOR, POINTER, Profile, value_cost

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """The arguments of one ``SET key value [EX ttl]`` and what the server does with them."""

    key_len: int
    value: str
    ttl: int | None

    def argv(self, profile: Profile) -> int:
        """Bytes the parsed command holds while it runs: argv array and argument objects."""
        args = [3, self.key_len, len(self.value.encode())]
        if self.ttl is not None:
            args += [2, len(str(self.ttl))]
        return profile.alloc(POINTER * len(args)) + sum(profile.string_object(n) for n in args)


@dataclass
class Table:
    """A hash table's size and fill, and a rehash's old table still allocated."""

    size: int = 0
    used: int = 0
    old: int = 0  # buckets of the old table while a rehash runs
    old_until: int = 0  # the key index by which the rehash is certainly over


@dataclass
class FillResult:
    """One simulated fill."""

    keys: int
    used_memory: int
    windows: list[dict[str, int]] = field(default_factory=list)
    expansions: list[dict[str, int | str]] = field(default_factory=list)
    #: Valkey on glibc: objects that may have taken a freed child bucket's larger chunk.
    reusable: int = 0


def simulate_fill(
    profile: Profile,
    *,
    key_lengths: list[int] | None = None,
    key_length: Callable[[int], int] | None = None,
    value: str,
    ttl: int | None,
    used_memory: int,
    maxmemory: int,
    main: Table,
    expires: Table,
    not_counted: int = 0,
    shared_integers: bool = True,
    retain_old_tables: bool | frozenset[str],
    first_set_histogram: bool = False,
    pending_reply: int = 0,
    deferred: frozenset[str] = frozenset(),
    deferred_from: int = 0,
    limit: int = 50_000_000,
) -> FillResult:
    """Replay ``SET key{i} value`` one key at a time until the first OOM refusal.

    ``key_length(i)`` gives the key length of write ``i`` (1-based). An old table lives at
    least until the command that grew its dict has ended: in the same command the expires
    dict's growth is checked with both main tables allocated. The OOM check runs
    before each command against ``used_memory`` plus the command's own arguments; a dict
    grows when full unless that would cross ``maxmemory`` while its load is <= 1.618. With
    ``retain_old_tables`` an old table stays until the writes alone could have finished the
    rehash (the server's cron usually finishes it sooner: that is the timing window); a
    set of names retains only those tables' old halves.
    ``pending_reply`` is what a pipelined batch holds while a later command runs: the list
    node that queues the connection for writing its earlier replies. ``deferred`` names tables
    whose growth from write ``deferred_from`` on does not happen while their load allows it
    (a dict does not grow while an earlier rehash of it still runs, and by the time it may, the
    growth can cross ``maxmemory``).
    """
    if maxmemory <= 0:
        raise ValueError("maxmemory must be set to predict a capacity")

    def length_of(i: int) -> int:
        if key_length is not None:
            return key_length(i)
        return key_lengths[i - 1] if key_lengths else 0

    val = value_cost(profile, value, shared_integers=shared_integers)
    initial_obj = profile.string_object(len(value.encode()))
    entry = profile.dict_entry
    used = used_memory
    result = FillResult(0, used)
    histogram_pending = first_set_histogram
    main, expires = Table(**vars(main)), Table(**vars(expires))
    if isinstance(retain_old_tables, bool):
        retained = frozenset({"main", "expires"}) if retain_old_tables else frozenset()
    else:
        retained = retain_old_tables

    def finish_rehash(table: Table, i: int, force: bool) -> int:
        if table.old and (force or i >= table.old_until):
            freed = profile.table(table.old)
            table.old = 0
            return freed
        return 0

    # Rehash steps per SET: main dict lookup + add (+ the expire's lookup); expires add.
    steps = {"main": 3 if ttl is not None else 2, "expires": 1}

    def grow(table: Table, name: str, i: int, now: int) -> int:
        if table.old or table.used < table.size and table.size:
            return 0
        new_size = 4 if table.size == 0 else 1 << table.used.bit_length()
        more = profile.table(new_size)
        ratio = table.used / table.size if table.size else 0.0
        if table.size and ratio <= MAX_LOAD_FACTOR and now - not_counted + more > maxmemory:
            return 0
        if name in deferred and i >= deferred_from and table.size and ratio <= MAX_LOAD_FACTOR:
            return 0
        result.expansions.append({"table": name, "at_key": i, "from": table.size, "to": new_size})
        if table.size:
            table.old = table.size
            # Each rehash step moves one non-empty bucket; S entries fill about S(1 - e^-load) of
            # S buckets. The margin (3 sigma + 8) keeps this an upper bound for the writes alone.
            nonempty = table.size * (1 - math.exp(-table.used / table.size))
            bound = nonempty + 3 * math.sqrt(table.size) + 8
            table.old_until = i + math.ceil(bound / steps[name])
            result.windows.append(
                {"table_bytes": profile.table(table.size), "from_key": i, "to_key": table.old_until}
            )
        table.size = new_size
        return more

    for i in range(1, limit):
        klen = int(length_of(i))
        command = Command(klen, value, ttl)
        argv = command.argv(profile)
        for name, table in (("main", main), ("expires", expires)):
            used -= finish_rehash(table, i, name not in retained)
        if used + argv + pending_reply - not_counted > maxmemory:
            result.keys = i - 1
            result.used_memory = used
            return result
        argv_now = argv - initial_obj + val.charged
        key_copy = profile.sds(klen)
        used += grow(main, "main", i, used + argv_now + key_copy)
        used += key_copy + entry
        main.used += 1
        if ttl is not None:
            used += grow(expires, "expires", i, used + argv_now)
            used += entry
            expires.used += 1
        used += val.charged
        if histogram_pending:
            used += profile.latency_histogram
            histogram_pending = False
    result.keys = limit - 1
    result.used_memory = used
    return result
