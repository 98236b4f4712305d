"""Typed, frozen settings read once from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from shared import constants
from shared.exceptions import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _int(name: str, raw: str, minimum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, raw: str, minimum: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_host_ports(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """Parse ``host:port,host:port`` (``[::1]:26379`` for IPv6) into pairs."""
    pairs = []
    for item in _list(raw):
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise ConfigurationError(f"{name}: expected host:port, got {item!r}")
        pairs.append((host.strip("[]"), _int(name, port, minimum=1)))
    return tuple(pairs)


def parse_counts(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """Parse ``queue=count,queue=count`` (``member=3,goods=1``) into pairs, counts >= 1."""
    pairs = []
    for item in _list(raw):
        queue, sep, count = item.partition("=")
        if not sep or not queue.strip() or not re.fullmatch(r"[A-Za-z0-9_.-]+", queue.strip()):
            raise ConfigurationError(f"{name}: expected queue=count, got {item!r}")
        pairs.append((queue.strip(), _int(name, count.strip(), minimum=1)))
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    """Every setting of the system; build it with :meth:`from_env`."""

    redis_url: str = constants.DEFAULT_REDIS_URL
    #: Redis for the cache API; ``None`` means the queue's Redis.
    cache_redis_url: str | None = None
    database_url: str = constants.DEFAULT_DATABASE_URL
    alert_webhook_url: str | None = None
    max_body_bytes: int = constants.DEFAULT_MAX_BODY_BYTES
    cache_max_value_bytes: int = 512 * 1024
    api_token: str | None = None
    #: Redis Cluster seed nodes; when set, the queue's Redis is the cluster (docs/cluster.md).
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    #: How many namespaces (hash-tagged RQ prefixes, each in one slot) each queue spreads over.
    queue_namespaces: tuple[tuple[str, int], ...] = ()
    # Sentinel: when ``sentinels`` is non-empty it wins over ``redis_url``'s host and port.
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_password: str | None = None
    #: TLS to the Sentinels themselves; the master's TLS follows ``REDIS_URL``'s ``rediss://``.
    sentinel_tls: bool = False
    redis_password: str | None = None
    #: CA bundle, client certificate and key for TLS to Redis and the Sentinels.
    tls_ca_certs: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    #: A worker that reaches no master for this many seconds exits non-zero.
    worker_master_timeout: float = constants.DEFAULT_WORKER_MASTER_TIMEOUT
    #: A job that cannot reach its database retries for this long before it counts an attempt.
    db_retry_seconds: float = constants.DEFAULT_DB_RETRY_SECONDS
    # Distributed lock: independent masters; empty means the queue's Redis alone.
    lock_redis_urls: tuple[str, ...] = ()
    enqueue_min_replicas: int = 0
    enqueue_replica_timeout_ms: int = 1000
    enqueue_retry_seconds: float = constants.DEFAULT_ENQUEUE_RETRY_SECONDS
    socket_timeout: float = constants.DEFAULT_SOCKET_TIMEOUT
    job_attempts: int = constants.DEFAULT_JOB_ATTEMPTS
    retry_intervals: tuple[int, ...] = constants.DEFAULT_RETRY_INTERVALS
    job_timeout: int = constants.DEFAULT_JOB_TIMEOUT
    result_ttl: int = constants.DEFAULT_RESULT_TTL
    failure_ttl: int = constants.DEFAULT_FAILURE_TTL
    dashboard_user: str = "admin"
    dashboard_password: str | None = None
    dashboard_read_only: bool = False
    #: Seconds between samples of ``INFO memory`` for the dashboard's chart; 0 turns sampling off.
    memory_sample_seconds: float = constants.DEFAULT_MEMORY_SAMPLE_SECONDS
    allow_evicting_policy: bool = False
    heartbeat_timeout: float = 15.0
    #: Jobs a fast worker runs at once (threads); 1 runs them in the worker's main thread.
    worker_concurrency: int = 1
    #: Jobs a fast worker claims per round trip (they count as started together).
    worker_batch: int = 1
    log_level: str = "INFO"

    @property
    def lock_urls(self) -> tuple[str, ...]:
        """The lock's Redis masters: ``LOCK_REDIS_URLS`` or else the queue's Redis."""
        return self.lock_redis_urls or (self.redis_url,)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (tests and the CLI use this)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        kwargs: dict[str, Any] = {}
        text = {
            "REDIS_URL": "redis_url",
            "CACHE_REDIS_URL": "cache_redis_url",
            "DATABASE_URL": "database_url",
            "ALERT_WEBHOOK_URL": "alert_webhook_url",
            "API_TOKEN": "api_token",
            "REDIS_SENTINEL_MASTER": "sentinel_master",
            "REDIS_SENTINEL_PASSWORD": "sentinel_password",
            "REDIS_PASSWORD": "redis_password",
            "REDIS_TLS_CA_CERTS": "tls_ca_certs",
            "REDIS_TLS_CERTFILE": "tls_certfile",
            "REDIS_TLS_KEYFILE": "tls_keyfile",
            "DASHBOARD_USER": "dashboard_user",
            "DASHBOARD_PASSWORD": "dashboard_password",
            "LOG_LEVEL": "log_level",
        }
        for var, attr in text.items():
            value = get(var)
            if value is not None:
                kwargs[attr] = value
        ints = {
            "MAX_BODY_BYTES": ("max_body_bytes", 1),
            "CACHE_MAX_VALUE_BYTES": ("cache_max_value_bytes", 1),
            "ENQUEUE_MIN_REPLICAS": ("enqueue_min_replicas", 0),
            "ENQUEUE_REPLICA_TIMEOUT_MS": ("enqueue_replica_timeout_ms", 1),
            "JOB_ATTEMPTS": ("job_attempts", 1),
            "JOB_TIMEOUT": ("job_timeout", 1),
            "RESULT_TTL": ("result_ttl", -1),
            "FAILURE_TTL": ("failure_ttl", -1),
            "WORKER_CONCURRENCY": ("worker_concurrency", 1),
            "WORKER_BATCH": ("worker_batch", 1),
        }
        for var, (attr, minimum) in ints.items():
            value = get(var)
            if value is not None:
                kwargs[attr] = _int(var, value, minimum)
        floats = {
            "ENQUEUE_RETRY_SECONDS": ("enqueue_retry_seconds", 0.0),
            "REDIS_SOCKET_TIMEOUT": ("socket_timeout", 0.01),
            "HEARTBEAT_TIMEOUT": ("heartbeat_timeout", 1.0),
            "MEMORY_SAMPLE_SECONDS": ("memory_sample_seconds", 0.0),
            "WORKER_MASTER_TIMEOUT": ("worker_master_timeout", 0.1),
            "DB_RETRY_SECONDS": ("db_retry_seconds", 0.0),
        }
        for var, (attr, fminimum) in floats.items():
            value = get(var)
            if value is not None:
                kwargs[attr] = _float(var, value, fminimum)
        bools = {
            "DASHBOARD_READ_ONLY": "dashboard_read_only",
            "ALLOW_EVICTING_POLICY": "allow_evicting_policy",
            "REDIS_SENTINEL_TLS": "sentinel_tls",
        }
        for var, attr in bools.items():
            value = get(var)
            if value is not None:
                kwargs[attr] = _bool(var, value)
        sentinels = get("REDIS_SENTINELS")
        if sentinels is not None:
            kwargs["sentinels"] = parse_host_ports("REDIS_SENTINELS", sentinels)
        cluster_nodes = get("REDIS_CLUSTER_NODES")
        if cluster_nodes is not None:
            kwargs["cluster_nodes"] = parse_host_ports("REDIS_CLUSTER_NODES", cluster_nodes)
        namespaces = get("QUEUE_NAMESPACES")
        if namespaces is not None:
            kwargs["queue_namespaces"] = parse_counts("QUEUE_NAMESPACES", namespaces)
            if cluster_nodes is None:
                raise ConfigurationError(
                    "QUEUE_NAMESPACES needs REDIS_CLUSTER_NODES (namespaces spread a queue over a cluster)"
                )
        if cluster_nodes is not None and sentinels is not None:
            raise ConfigurationError("set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both")
        lock_urls = get("LOCK_REDIS_URLS")
        if lock_urls is not None:
            kwargs["lock_redis_urls"] = _list(lock_urls)
        intervals = get("RETRY_INTERVALS")
        if intervals is not None:
            kwargs["retry_intervals"] = tuple(_int("RETRY_INTERVALS", v, 0) for v in _list(intervals))
        return cls(**kwargs)
