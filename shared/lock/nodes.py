"""The lock's nodes: independent Redis masters, each with a small pool of raw connections,
and the fan-out that runs one script on every node in about one round trip."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from shared.cluster.slots import ClusterMap
from shared.connections import raw
from shared.connections.raw import LuaScript

#: Errors that make a node count as "did not answer".
NODE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

#: The lock's scripts, each in a ``.lua`` file beside this module.
ACQUIRE = LuaScript.load(__package__, "acquire.lua")
RAISE_FENCE = LuaScript.load(__package__, "raise_fence.lua")
RELEASE = LuaScript.load(__package__, "release.lua")
EXTEND = LuaScript.load(__package__, "extend.lua")
#: Every script of the lock, loaded together on a node that lacks one.
SCRIPTS = (ACQUIRE, RAISE_FENCE, RELEASE, EXTEND)


class Node:
    """One independent Redis master, with its own small pool of raw connections."""

    def __init__(self, url: str, timeout: float, password: str | None = None) -> None:
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if password and "@" not in url:
            options["password"] = password
        pool = ConnectionPool.from_url(url, **options)
        self.url = url
        self._factory = cast(
            Callable[[], raw.Connection], functools.partial(pool.connection_class, **pool.connection_kwargs)
        )
        self._idle: list[raw.Connection] = []
        self._mutex = threading.Lock()

    def get(self, key: str | None = None) -> raw.Connection:
        """An idle connection, or a new one (connected lazily on first send); ``key``: what it is for."""
        with self._mutex:
            if self._idle:
                return self._idle.pop()
        return self._factory()

    def put(self, conn: raw.Connection) -> None:
        """Return a connection whose every reply was read."""
        with self._mutex:
            self._idle.append(conn)

    def close(self) -> None:
        """Disconnect every idle connection."""
        with self._mutex:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()

    def stale(self) -> None:
        """The node failed or redirected a call (a cluster node looks its slots up again)."""


class ClusterNode(Node):
    """A whole Redis Cluster as one lock node: each lock's keys go to the master of their slot.

    A lock's keys share one hash tag (:func:`shared.lock.redlock.lock_keys`), so its scripts
    run on one master. The cluster replicates asynchronously, so as one node it is as safe as
    one Redis that fails over (docs/lock.md, "Why not Sentinel for the lock").
    """

    def __init__(self, cluster: ClusterMap, timeout: float, password: str | None = None) -> None:
        self.cluster = cluster
        self.url = "cluster:" + ",".join(f"{host}:{port}" for host, port in cluster.seeds)
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if password:
            self._options["password"] = password
        self._pools: dict[tuple[str, int], list[raw.Connection]] = {}
        self._mutex = threading.Lock()

    def get(self, key: str | None = None) -> raw.Connection:
        """A connection to the master of ``key``'s slot."""
        assert key is not None, "a cluster node needs the key to route by"
        host, port = self.cluster.owner(key_slot(key.encode()))
        with self._mutex:
            idle = self._pools.get((host, port))
            if idle:
                return idle.pop()
        return cast(raw.Connection, Connection(host=host, port=port, **self._options))  # type: ignore[no-untyped-call]

    def put(self, conn: raw.Connection) -> None:
        """Return a connection whose every reply was read."""
        address = (conn.host, conn.port)  # type: ignore[attr-defined]
        with self._mutex:
            self._pools.setdefault(address, []).append(conn)

    def close(self) -> None:
        """Disconnect every idle connection."""
        with self._mutex:
            pools, self._pools = self._pools, {}
        for idle in pools.values():
            for conn in idle:
                conn.disconnect()

    def stale(self) -> None:
        """Look the slots up again before the next call."""
        self.cluster.invalidate()


Call = tuple[Node, LuaScript, Sequence[str], Sequence[str | int]]


def fan_out(calls: Sequence[Call]) -> list[Any]:
    """Run one script per node concurrently: send every request, then read every reply.

    Each result is the script's reply or the exception that node raised.
    """
    sent: list[raw.Connection | Exception] = []
    for node, script, keys, args in calls:
        try:
            conn = node.get(keys[0] if keys else None)
            raw.send(conn, raw.pack([raw.evalsha(script, keys, args)]))
        except NODE_ERRORS as exc:
            node.stale()
            sent.append(exc)
        else:
            sent.append(conn)
    results: list[Any] = []
    for (node, script, keys, args), item in zip(calls, sent, strict=True):
        if isinstance(item, Exception):
            results.append(item)
            continue
        try:
            [reply] = raw.read(item, 1)
            if isinstance(reply, NoScriptError):
                raw.load_scripts(item, SCRIPTS)
                raw.send(item, raw.pack([raw.evalsha(script, keys, args)]))
                [reply] = raw.read(item, 1)
        except NODE_ERRORS as exc:
            node.stale()
            results.append(exc)
            continue
        except ResponseError as exc:
            # An error reply while loading the scripts: the connection is in step.
            reply = exc
        node.put(item)
        if isinstance(reply, AskError | MovedError | ClusterDownError):
            node.stale()
        results.append(reply)
    return results
