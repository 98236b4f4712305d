"""The one place that builds Redis clients: plain URL, ``rediss://`` TLS, password, Sentinel.

Build one client per process and pass it around; never create clients at import time.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .settings import Settings

logger = logging.getLogger(__name__)

#: Errors that mean "no usable master right now": retry later, answer 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
)


def _client_options(settings: Settings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
        "health_check_interval": 30,
        # One quick reconnect inside redis-py; longer waits are the caller's business.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    }


def redis_from_url(url: str, settings: Settings | None = None, **options: Any) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    opts = _client_options(settings or Settings())
    if settings is not None and settings.redis_password and "@" not in url:
        opts["password"] = settings.redis_password
    opts.update(options)
    return Redis.from_url(url, **opts)


def sentinel_from_settings(settings: Settings) -> Sentinel:
    """A Sentinel client for ``settings.sentinels``."""
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": settings.socket_timeout}
    if settings.sentinel_password:
        sentinel_kwargs["password"] = settings.sentinel_password
    return Sentinel(  # type: ignore[no-untyped-call]
        list(settings.sentinels),
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        password=settings.redis_password,
    )


def get_redis(settings: Settings, **options: Any) -> Redis:
    """The queue's Redis: the Sentinel master when sentinels are set, else ``REDIS_URL``."""
    if settings.sentinels:
        sentinel = sentinel_from_settings(settings)
        master: Redis = sentinel.master_for(settings.sentinel_master, **options)  # type: ignore[no-untyped-call]
        return master
    return redis_from_url(settings.redis_url, settings, **options)


def get_cache_redis(settings: Settings, queue_redis: Redis | None = None) -> Redis:
    """The cache API's Redis: ``CACHE_REDIS_URL`` or the queue's own client."""
    if settings.cache_redis_url:
        return redis_from_url(settings.cache_redis_url, settings)
    return queue_redis if queue_redis is not None else get_redis(settings)


def describe(conn: Redis) -> str:
    """A short, password-free description of where a client points."""
    kwargs = conn.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    service = getattr(conn.connection_pool, "service_name", None)
    if service:
        return f"sentinel://{service}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
