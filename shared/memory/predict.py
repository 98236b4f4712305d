"""Capacity predictions: how many more keys of a pattern fit before ``maxmemory`` refuses a write.

From a :class:`~shared.memory.snapshot.Snapshot`, the point prediction replays the fill on the
model (:mod:`shared.memory.replay` for Redis, :mod:`shared.memory.valkey_table` for Valkey 8.1+);
``low`` and ``high`` replay it again with every rehash window, allocator effect and margin the
server's own timing can decide, so the actual count lies between them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from shared.memory import valkey, valkey_table
from shared.memory.model import key_breakdown
from shared.memory.replay import simulate_fill
from shared.memory.snapshot import ProbeError, Snapshot

logger = logging.getLogger(__name__)


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
    state: valkey_table.ValkeyState,
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
    point = valkey_table.simulate_valkey_fill(profile, pending_reply=node, **common)
    band = 0.0 if seeded else valkey.SIGMAS
    # The server's own bookkeeping moved the end by up to two keys either way on 9.1 (reply
    # buffer resizes, the heap's state): ``high`` and ``low`` keep NOISE_MARGIN bytes for it.
    high = valkey_table.simulate_valkey_fill(
        profile, sigmas=-band, pending_reply=-valkey.NOISE_MARGIN, **common
    )
    # A pipelined batch is refused at its start, holding more than its parsed commands (up to
    # a query buffer more, measured): ``low`` allows 16 KiB besides them.
    margin = (node + valkey.PIPELINE_MARGIN if pipelined else 0) + valkey.NOISE_MARGIN
    lows = [
        valkey_table.simulate_valkey_fill(
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
