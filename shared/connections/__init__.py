"""Redis connections: the one client factory (URL, TLS, Sentinel), raw pipelines, the eviction guard.

``shared.connections.get_redis(settings)`` is the queue's Redis for every part of the system.
"""

from shared.connections.factory import (
    UNAVAILABLE_ERRORS,
    SentinelConnection,
    SentinelSSLConnection,
    client_options,
    close_redis,
    describe,
    get_cache_redis,
    get_redis,
    master_options,
    redis_from_url,
    rq_client_options,
    rq_redis_url,
    rq_sentinel_config,
    sentinel_from_settings,
    sentinel_options,
)
from shared.connections.rideout import RedisGaveUpError, RideOutRetry, give_url_options, quick_retry, ride_out

__all__ = [
    "UNAVAILABLE_ERRORS",
    "RedisGaveUpError",
    "RideOutRetry",
    "SentinelConnection",
    "SentinelSSLConnection",
    "client_options",
    "close_redis",
    "describe",
    "get_cache_redis",
    "get_redis",
    "master_options",
    "redis_from_url",
    "give_url_options",
    "quick_retry",
    "ride_out",
    "rq_client_options",
    "rq_redis_url",
    "rq_sentinel_config",
    "sentinel_from_settings",
    "sentinel_options",
]
