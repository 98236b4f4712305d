"""The one place that builds Redis clients: plain URL, ``rediss://`` TLS, password, Sentinel.

Build one client per process and pass it around; never create clients at import time.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from shared.connections.rideout import RideOutRetry, quick_retry
from shared.exceptions import ConfigurationError
from shared.settings import Settings

logger = logging.getLogger(__name__)

#: Errors that mean "no usable master right now": retry later, answer 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
)


class SentinelConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, fixed in two ways.

    - An interrupted read drops the socket: redis-py's class reads with
      ``disconnect_on_error=False``, so a read cut short by an exception (a worker's SIGTERM
      during ``BLMOVE``) leaves the connection in the pool with the old reply still pending:
      the next command on it reads the wrong reply or hangs.
    - A reconnect asks the Sentinels again: redis-py reconnects a dropped connection inside
      ``send_packed_command`` to the address it had, so a command retried on the same
      connection (redis-py's retry policy, :class:`~shared.connections.rideout.RideOutRetry`)
      knocks on the dead master, or on the old master turned replica (``READONLY``), for as long
      as it retries, however soon the Sentinels name the new one.
    """

    def read_response(self, disable_decoding: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("disconnect_on_error", True)
        return super().read_response(disable_decoding, **kwargs)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:
            self.connect()  # type: ignore[no-untyped-call]  # through the Sentinels, not the old address
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """:class:`SentinelConnection` over TLS."""


def client_options(settings: Settings) -> dict[str, Any]:
    """Timeouts, health checks and redis-py's own quick reconnect, for every client of the queue's Redis."""
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
        "health_check_interval": 30,
        # One quick reconnect inside redis-py; longer waits are the caller's business.
        "retry": quick_retry(),
    }


def rq_client_options(settings: Settings) -> dict[str, Any]:
    """Options of the client RQ builds from ``consumer.settings``: it rides out outages.

    RQ's own worker classes end on a connection error met outside the blocking pop; with
    :class:`~shared.connections.rideout.RideOutRetry` every command waits for Redis for up to
    ``WORKER_MASTER_TIMEOUT`` seconds instead. Failover-aware workers (``FastWorker``) put the
    quick policy back and handle the outage themselves.
    """
    return {**client_options(settings), "retry": RideOutRetry(settings.worker_master_timeout)}


def _tls_options(settings: Settings) -> dict[str, Any]:
    """Certificate options shared by every TLS connection (Redis and the Sentinels)."""
    opts: dict[str, Any] = {}
    if settings.tls_ca_certs:
        opts["ssl_ca_certs"] = settings.tls_ca_certs
    if settings.tls_certfile:
        opts["ssl_certfile"] = settings.tls_certfile
    if settings.tls_keyfile:
        opts["ssl_keyfile"] = settings.tls_keyfile
    return opts


def redis_from_url(url: str, settings: Settings | None = None, **options: Any) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
    opts = client_options(settings or Settings())
    if settings is not None:
        if settings.redis_password and "@" not in url:
            opts["password"] = settings.redis_password
        if url.startswith("rediss://"):
            opts.update(_tls_options(settings))
    opts.update(options)
    return Redis.from_url(url, **opts)


def master_options(settings: Settings) -> dict[str, Any]:
    """Connection options for the master (and replicas) found through Sentinel.

    ``REDIS_URL`` still decides the scheme (``rediss://`` means TLS), the database number and
    the credentials; Sentinel decides the host and port.
    """
    try:
        parsed: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigurationError(f"REDIS_URL: {exc}") from None
    opts: dict[str, Any] = {"db": int(parsed.get("db", 0) or 0)}
    if parsed.get("username"):
        opts["username"] = parsed["username"]
    password = settings.redis_password or parsed.get("password")
    if password:
        opts["password"] = password
    tls = settings.redis_url.startswith("rediss://")
    if tls:
        opts["ssl"] = True
        opts.update({k: v for k, v in parsed.items() if k.startswith("ssl_")})
        opts.update(_tls_options(settings))
    opts["connection_class"] = SentinelSSLConnection if tls else SentinelConnection
    return opts


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """Connection options for the Sentinels themselves (password, TLS, timeouts)."""
    opts: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        # A dead Sentinel must not hold up the question to the next one.
        "socket_connect_timeout": min(settings.socket_timeout, 1.0),
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.sentinel_password:
        opts["password"] = settings.sentinel_password
    if settings.sentinel_tls:
        opts["ssl"] = True
        opts.update(_tls_options(settings))
    return opts


def sentinel_from_settings(settings: Settings) -> Sentinel:
    """A Sentinel client for ``settings.sentinels``."""
    if not settings.sentinels:
        raise ConfigurationError("REDIS_SENTINELS is not set")
    return Sentinel(  # type: ignore[no-untyped-call]
        list(settings.sentinels),
        sentinel_kwargs=sentinel_options(settings),
        **master_options(settings),
    )


def get_redis(settings: Settings, **options: Any) -> Redis:
    """The queue's Redis: the Sentinel master when sentinels are set, else ``REDIS_URL``.

    A Sentinel-managed client asks the Sentinels for the master on every new connection, drops
    its idle connections when the master moves, and turns a demoted master's ``READONLY``
    reply into a ``ConnectionError``, so callers only ever retry connection errors.
    """
    if settings.cluster_nodes:
        # A cluster: this process's namespace slot (RQ_KEY_PREFIX), or the home slot.
        from shared.cluster.clients import process_tag, slot_client

        return slot_client(settings, process_tag(settings), **options)
    if settings.sentinels:
        sentinel = sentinel_from_settings(settings)
        opts = client_options(settings)
        opts.update(options)
        master: Redis = sentinel.master_for(settings.sentinel_master, **opts)  # type: ignore[no-untyped-call]
        return master
    return redis_from_url(settings.redis_url, settings, **options)


def close_redis(conn: Redis) -> None:
    """Close ``conn`` and, for a Sentinel-managed client, its Sentinel clients too."""
    manager = getattr(conn.connection_pool, "sentinel_manager", None)
    conn.close()
    conn.connection_pool.disconnect()
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()
        sentinel.connection_pool.disconnect()


def rq_redis_url(settings: Settings) -> str:
    """``REDIS_URL`` for RQ's settings module, with ``REDIS_PASSWORD`` and TLS files folded in."""
    url = settings.redis_url
    if url.startswith("unix://") or not (settings.redis_password or url.startswith("rediss://")):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if settings.redis_password and "@" not in netloc:
        netloc = f":{quote(settings.redis_password, safe='')}@{netloc}"
    query = parse_qsl(parts.query)
    if url.startswith("rediss://"):
        present = {key for key, _ in query}
        query += [(k, v) for k, v in _tls_options(settings).items() if k not in present]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def rq_sentinel_config(settings: Settings) -> dict[str, Any]:
    """RQ's ``SENTINEL`` settings dict (``rq worker -c consumer.settings``) for ``settings``."""
    master = master_options(settings)
    return {
        "INSTANCES": list(settings.sentinels),
        "MASTER_NAME": settings.sentinel_master,
        "DB": master.pop("db"),
        "USERNAME": master.pop("username", None),
        "PASSWORD": master.pop("password", None),
        "SOCKET_TIMEOUT": settings.socket_timeout,
        "SSL": master.pop("ssl", False),
        "CONNECTION_KWARGS": {**master, **rq_client_options(settings)},
        "SENTINEL_KWARGS": sentinel_options(settings),
    }


def get_cache_redis(settings: Settings, queue_redis: Redis | None = None) -> Redis:
    """The cache API's Redis: ``CACHE_REDIS_URL``, the queue's own client, or the whole cluster.

    On a Redis Cluster the cache's keys spread over every slot, so it uses redis-py's cluster
    client (each key on its own master, ``MOVED`` and failovers followed by redis-py).
    """
    if settings.cache_redis_url:
        return redis_from_url(settings.cache_redis_url, settings)
    if settings.cluster_nodes:
        from redis.cluster import ClusterNode, RedisCluster

        opts = {k: v for k, v in master_options(settings).items() if k not in ("connection_class", "db")}
        opts.update(socket_timeout=settings.socket_timeout, socket_connect_timeout=settings.socket_timeout)
        nodes = [ClusterNode(host, port) for host, port in settings.cluster_nodes]  # type: ignore[no-untyped-call]
        return cast(Redis, RedisCluster(startup_nodes=nodes, **opts))
    return queue_redis if queue_redis is not None else get_redis(settings)


def describe(conn: Redis) -> str:
    """A short, password-free description of where a client points."""
    kwargs = conn.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    service = getattr(conn.connection_pool, "service_name", None)
    if service:
        return f"sentinel://{service}"
    tag = getattr(conn.connection_pool, "tag", None)
    if tag:
        return f"cluster slot {conn.connection_pool.slot} ({tag})"  # type: ignore[attr-defined]
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
