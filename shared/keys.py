"""The project's own Redis key names, all under one prefix (:data:`PREFIX`, ``archive:``).

The cache API, the distributed lock and the figures of ``/metrics`` and the dashboard write
their keys under :data:`PREFIX`; RQ's keys are the seam's (:mod:`shared.rqmodel.keys`).
:class:`Keys` is a namespace's whole set: RQ's keys under RQ's prefix (it is an
:class:`~shared.rqmodel.keys.RQKeys`) and, beside them, the project's keys that belong to the
namespace's jobs (the workers' heartbeats, the job counters, the durable-enqueue marker), so
that a namespace of a Redis Cluster is one self-contained set of keys in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.rqmodel.keys import RQKeys

PREFIX = "archive:"

#: Keys of the cache API (``/api/v1/redis``).
CACHE_PREFIX = PREFIX + "cache:"
#: Keys of the distributed lock: ``archive:lock:<name>``.
LOCK_PREFIX = PREFIX + "lock:"
#: Fencing counters of the distributed lock: ``archive:fence:<name>``.
FENCE_PREFIX = PREFIX + "fence:"
#: The distributed lock's waiter flags and release notifications.
LOCK_WAIT_PREFIX = PREFIX + "lockwait:"
LOCK_NOTIFY_PREFIX = PREFIX + "locknotify:"


def own_prefix_for(rq_prefix: str) -> str:
    """The project's prefix beside RQ's: ``archive:``, or ``<tag>:archive:`` when RQ's carries a hash tag.

    A hash tag (``{member}``) pins RQ's keys to one Redis Cluster slot; the project's keys of
    that namespace (heartbeats, counters) must sit in the same slot, so they carry it too.
    """
    if "{" in rq_prefix and "}" in rq_prefix.split("{", 1)[1]:
        return f"{rq_prefix}:{PREFIX}"
    return PREFIX


@dataclass(frozen=True)
class Keys(RQKeys):
    """Key names of one namespace: RQ's keys under ``rq_prefix``, the project's under ``own_prefix``."""

    own_prefix: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.own_prefix:
            object.__setattr__(self, "own_prefix", own_prefix_for(self.rq_prefix))

    @property
    def heartbeats(self) -> str:
        """Fast workers' heartbeats: a sorted set of worker names scored by their last beat."""
        return self.own_prefix + "heartbeat:workers"

    def recovering(self, name: str) -> str:
        """Held while one process recovers the jobs of dead worker ``name`` (expires if it dies)."""
        return f"{self.own_prefix}heartbeat:recovering:{name}"

    @property
    def job_stats(self) -> str:
        """Job counters (hash, fields ``<queue>:<event>``)."""
        return self.own_prefix + "stats:jobs"

    @property
    def duration(self) -> str:
        """Histogram of job run times (hash, fields ``<queue>:b<i>``, ``<queue>:sum``, ``<queue>:count``)."""
        return self.own_prefix + "stats:duration"

    @property
    def wait(self) -> str:
        """Histogram of the time jobs waited in their queue."""
        return self.own_prefix + "stats:wait"

    def finished_minute(self, minute: int) -> str:
        """Jobs finished in one unix minute (hash queue -> count, expiring)."""
        return f"{self.own_prefix}stats:finished:{minute}"

    @property
    def enqueue_latency(self) -> str:
        """The producer's enqueue latency histogram."""
        return self.own_prefix + "stats:enqueue_latency"

    @property
    def memory_samples(self) -> str:
        """Samples of ``INFO memory`` (sorted set scored by time)."""
        return self.own_prefix + "stats:memory"

    @property
    def memory_sampler(self) -> str:
        """The memory sampler's turn marker (one sample per interval across processes)."""
        return self.own_prefix + "stats:memory:sampler"

    @property
    def lock_stats(self) -> str:
        """The distributed lock's counters (hash, fields acquired, contended, failed, ...)."""
        return self.own_prefix + "stats:lock"

    @property
    def durable_marker(self) -> str:
        """Written right before ``WAIT`` so that ``WAIT`` covers every earlier write."""
        return self.own_prefix + "durable:marker"


#: The keys of this process: RQ's configured prefix, the project's own.
KEYS = Keys()
