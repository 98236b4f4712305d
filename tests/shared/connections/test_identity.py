"""Which server the fixtures run (TEST_REDIS_SERVER), and how INFO tells Redis from Valkey."""

from __future__ import annotations

import redis

from shared.connections.identity import identity_from_info, server_identity
from tests.servers import SERVER_FAMILY


def test_the_session_server_is_the_one_chosen(r: redis.Redis) -> None:
    identity = server_identity(r)
    assert identity.family == SERVER_FAMILY
    if identity.is_valkey:
        # Valkey keeps reporting a Redis compatibility version beside its own.
        assert identity.major >= 8 and identity.redis_version.startswith("7.2")
        assert identity.title == f"Valkey {r.info('server')['valkey_version']}"
    else:
        assert identity.version == r.info("server")["redis_version"]


def test_identity_from_info_fields() -> None:
    info = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"}
    valkey = identity_from_info(info)
    assert (valkey.family, valkey.version, valkey.redis_version, valkey.title) == (
        "valkey",
        "9.1.2",
        "7.2.4",
        "Valkey 9.1.2",
    )
    redis7 = identity_from_info({"redis_version": "7.0.15"})
    assert (redis7.family, redis7.version, redis7.major, redis7.is_valkey) == ("redis", "7.0.15", 7, False)
    # Valkey 7.2 had no valkey_version field, only server_name.
    early = identity_from_info({"redis_version": "7.2.5", "server_name": "valkey"})
    assert early.title == "Valkey 7.2.5"
