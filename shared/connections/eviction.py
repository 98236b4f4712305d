"""The eviction guard: a queue's Redis must never delete keys on its own."""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

from shared.exceptions import ConfigurationError, EvictionPolicyError

logger = logging.getLogger(__name__)

#: Policies that never delete keys on their own.
SAFE_POLICIES = frozenset({"noeviction"})


def check_queue_policy(conn: Redis, *, allow: bool = False, cluster: bool = False) -> str | None:
    """Refuse an eviction policy that may delete queued jobs; return the policy (None if unreachable).

    Also refuses a Redis Cluster node reached as a plain Redis (``cluster`` false): RQ's first
    command with keys in two slots would fail with ``CROSSSLOT``; namespaces are the way.
    """
    try:
        info = conn.info("memory")
        enabled = int(conn.info("cluster").get("cluster_enabled", 0))
    except RedisError as exc:
        logger.warning("cannot read the eviction policy of the queue's Redis: %s", exc)
        return None
    if enabled and not cluster:
        raise ConfigurationError(
            "the queue's Redis is a Redis Cluster node: a plain client's keys span slots (CROSSSLOT); "
            "set REDIS_CLUSTER_NODES=host:port,... and QUEUE_NAMESPACES (e.g. member=3); "
            "see docs/cluster.md"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy in SAFE_POLICIES:
        return policy
    message = (
        f"the queue's Redis uses maxmemory-policy {policy}: it may evict queued jobs; "
        "set it to noeviction (CONFIG SET maxmemory-policy noeviction) or set ALLOW_EVICTING_POLICY=1"
    )
    if allow:
        logger.warning("%s (allowed by ALLOW_EVICTING_POLICY)", message)
        return policy
    raise EvictionPolicyError(message)
