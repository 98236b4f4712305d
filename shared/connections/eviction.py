"""The eviction guard: a queue's Redis must never delete keys on its own."""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

from shared.exceptions import EvictionPolicyError

logger = logging.getLogger(__name__)

#: Policies that never delete keys on their own.
SAFE_POLICIES = frozenset({"noeviction"})


def check_queue_policy(conn: Redis, *, allow: bool = False) -> str | None:
    """Refuse an eviction policy that may delete queued jobs; return the policy (None if unreachable)."""
    try:
        policy = str(conn.info("memory").get("maxmemory_policy", "noeviction"))
    except RedisError as exc:
        logger.warning("cannot read the eviction policy of the queue's Redis: %s", exc)
        return None
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
