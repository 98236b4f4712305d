"""Which server a connection reaches: Redis or Valkey, and its own version.

Valkey answers ``INFO server`` with ``server_name:valkey`` and ``valkey_version:9.1.2`` beside a
``redis_version:7.2.4`` it keeps for clients that gate features on Redis versions; the version
that says what the server does (its memory layout, its commands) is ``valkey_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

logger = logging.getLogger(__name__)

#: The server families the project runs on, as their binaries and ``server_name`` call them.
REDIS = "redis"
VALKEY = "valkey"
TITLES = {REDIS: "Redis", VALKEY: "Valkey"}


@dataclass(frozen=True)
class ServerIdentity:
    """A server's family and versions, from ``INFO server``."""

    family: str
    version: str
    #: What ``redis_version`` says (for Valkey the Redis version it is compatible with).
    redis_version: str

    @property
    def title(self) -> str:
        """``Valkey 9.1.2`` or ``Redis 7.0.15``."""
        return f"{TITLES.get(self.family, self.family)} {self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_valkey(self) -> bool:
        return self.family == VALKEY


def identity_from_info(info: Mapping[str, Any]) -> ServerIdentity:
    """The identity in an ``INFO server`` reply (parsed by redis-py)."""
    redis_version = str(info.get("redis_version", "0"))
    name = str(info.get("server_name", "")).lower()
    if name == VALKEY or "valkey_version" in info:
        return ServerIdentity(VALKEY, str(info.get("valkey_version", redis_version)), redis_version)
    return ServerIdentity(REDIS, redis_version, redis_version)


def server_identity(conn: Redis) -> ServerIdentity:
    """The identity of the server behind ``conn``."""
    return identity_from_info(conn.info("server"))
