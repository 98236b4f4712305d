"""Namespaces: RQ key prefixes with a hash tag, so that each one lives in one slot of the cluster.

``QUEUE_NAMESPACES=member=3,goods=1`` spreads queue ``member`` over three namespaces, for
example ``{member}``, ``{member-4}`` and ``{member-2}``: every key of a namespace (RQ's and the
project's) carries its tag, so it hashes to one slot and one master, and the tags are chosen
so that one queue's namespaces land on different masters where the cluster has enough of
them. The choice depends on the cluster's slot map, so the first process to plan stores it in
the cluster (hash :data:`REGISTRY_KEY`, one JSON list of tags per queue) and every later
process uses the stored tags: a producer started after a resharding still writes where the
workers read. A worker process serves one namespace (RQ's prefix is per process); RQ's own
classes see an ordinary Redis whose keys all sit in one slot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from redis import Redis

from shared.cluster.slots import ClusterMap, tag_slot
from shared.constants import ALL_QUEUES
from shared.keys import PREFIX, Keys
from shared.settings import Settings

logger = logging.getLogger(__name__)

#: Where the chosen tags are kept: a hash of queue name -> JSON list of tags.
REGISTRY_TAG = "{archive}"
REGISTRY_KEY = f"{REGISTRY_TAG}:{PREFIX}namespaces"


@dataclass(frozen=True)
class Namespace:
    """One RQ key prefix with a hash tag (``{member-2}``), serving one queue."""

    queue: str
    tag: str

    @cached_property
    def keys(self) -> Keys:
        """Every key name of this namespace."""
        return Keys(self.tag)

    @property
    def slot(self) -> int:
        """The hash slot of every key of this namespace."""
        return tag_slot(self.tag)


def candidates(queue: str) -> Iterator[str]:
    """Tags to try for ``queue``'s namespaces, in order: ``{member}``, ``{member-2}``, ..."""
    yield "{" + queue + "}"
    k = 2
    while True:
        yield "{" + f"{queue}-{k}" + "}"
        k += 1


def choose(queue: str, count: int, cluster: ClusterMap, taken: list[str] | None = None) -> list[str]:
    """``count`` tags for ``queue``: ``taken`` first, then tags whose masters hold the fewest so far."""
    chosen = list(taken or [])[:count]
    load = {master: 0 for master, _, _ in cluster.masters()}
    for tag in chosen:
        load[cluster.owner(tag_slot(tag))] = load.get(cluster.owner(tag_slot(tag)), 0) + 1
    for tag in candidates(queue):
        if len(chosen) >= count:
            break
        if tag in chosen:
            continue
        owner = cluster.owner(tag_slot(tag))
        if load.get(owner, 0) == min(load.values()):
            chosen.append(tag)
            load[owner] = load.get(owner, 0) + 1
    return chosen


def wanted_counts(settings: Settings) -> dict[str, int]:
    """Namespaces per queue: ``QUEUE_NAMESPACES``, one for every other queue of the system."""
    counts = dict.fromkeys(ALL_QUEUES, 1)
    counts.update(dict(settings.queue_namespaces))
    return counts


def plan(settings: Settings, cluster: ClusterMap, registry: Redis) -> dict[str, list[Namespace]]:
    """Every queue's namespaces, as stored in the cluster (chosen and stored when missing)."""
    stored = {_text(queue): json.loads(_text(tags)) for queue, tags in registry.hgetall(REGISTRY_KEY).items()}
    result: dict[str, list[Namespace]] = {}
    for queue, count in wanted_counts(settings).items():
        tags = stored.get(queue, [])
        if len(tags) < count:
            tags = choose(queue, count, cluster, tags)
            # Processes planning at once choose alike from the same map; the first write stays.
            if not registry.hsetnx(REGISTRY_KEY, queue, json.dumps(tags)):
                current = json.loads(_text(registry.hget(REGISTRY_KEY, queue) or b"[]"))
                if len(current) >= count:
                    tags = current
                else:
                    registry.hset(REGISTRY_KEY, queue, json.dumps(tags))
            logger.info("queue %s spreads over namespaces %s", queue, ", ".join(tags))
        elif len(tags) > count:
            logger.warning(
                "queue %s had %d namespaces, QUEUE_NAMESPACES asks for %d: %s get no new jobs (drain them)",
                queue,
                len(tags),
                count,
                ", ".join(tags[count:]),
            )
        result[queue] = [Namespace(queue, tag) for tag in tags[:count]]
    return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
