"""The lock's nodes: independent Redis masters, each with a small pool of raw connections,
and the fan-out that runs one script on every node in about one round trip."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.backoff import NoBackoff
from redis.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

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

    def get(self) -> raw.Connection:
        """An idle connection, or a new one (connected lazily on first send)."""
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


Call = tuple[Node, LuaScript, Sequence[str], Sequence[str | int]]


def fan_out(calls: Sequence[Call]) -> list[Any]:
    """Run one script per node concurrently: send every request, then read every reply.

    Each result is the script's reply or the exception that node raised.
    """
    sent: list[raw.Connection | Exception] = []
    for node, script, keys, args in calls:
        conn = node.get()
        try:
            raw.send(conn, raw.pack([raw.evalsha(script, keys, args)]))
        except NODE_ERRORS as exc:
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
            results.append(exc)
            continue
        except ResponseError as exc:
            # An error reply while loading the scripts: the connection is in step.
            reply = exc
        node.put(item)
        results.append(reply)
    return results
