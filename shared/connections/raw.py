"""Raw pipelines: pack commands, send them at once on one connection, read every reply.

The one hand-rolled pipeline of the project (the producer's enqueue, the worker's claim and
finish, the lock's fan-out to its nodes, the memory fill). redis-py's
``pipeline(transaction=False).execute()`` does the same with per-call bookkeeping (a command
stack, a connection checkout, response callbacks) that cost a noticeable share of a trivial
job (docs/performance.md); these helpers keep only the send and the reads.

Rules every caller gets from here: an error *reply* is returned (or raised) and leaves the
connection in step; any other failure (no reply, half a reply, an interrupt) disconnects the
connection before the error goes on, so a connection in an unknown state is never reused.
Scripts a server lacks (``NOSCRIPT`` after a restart, a failover or ``SCRIPT FLUSH``) are
loaded by :func:`load_scripts` and the call is made again by the caller.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - a redis-py that moved it: read_response then
    _NOT_ENOUGH_DATA = None

Command = Sequence[Any]


class Connection(Protocol):
    """The part of redis-py's connection class these helpers use."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def can_read(self, timeout: float = 0) -> bool: ...
    def disconnect(self) -> None: ...
    def pack_commands(self, commands: Any) -> list[bytes]: ...


@dataclass(frozen=True)
class LuaScript:
    """A Lua script read from a ``.lua`` file beside the code that runs it."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, package: str, filename: str) -> LuaScript:
        """The script ``filename`` of ``package`` (``LuaScript.load("shared.rqmodel", "claim.lua")``)."""
        return cls(filename, resources.files(package).joinpath(filename).read_text())


def pack(commands: Iterable[Command], connection: Connection | None = None) -> bytes:
    """One buffer holding ``commands`` in RESP, as redis-py packs them.

    Straight through hiredis when it is there: redis-py's packer copies every argument
    through a generator first. The commands here hold str, bytes and int arguments only,
    which hiredis encodes as redis-py does.
    """
    if _hiredis_pack is None:
        assert connection is not None
        return b"".join(connection.pack_commands(list(commands)))
    pack_one = _hiredis_pack
    return b"".join([pack_one(c if c.__class__ is tuple else tuple(c)) for c in commands])


def bulk(value: bytes) -> bytes:
    """One RESP bulk string (for commands packed ahead of time, part by part)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def send(connection: Connection, packed: bytes | list[bytes]) -> None:
    """Write ``packed``; a failed write disconnects ``connection`` and raises."""
    try:
        connection.send_packed_command(packed if isinstance(packed, list) else [packed])
    except BaseException:
        connection.disconnect()
        raise


def read(connection: Connection, count: int) -> list[Any]:
    """Read ``count`` replies; error replies come back as exception objects in the list.

    Any other failure disconnects ``connection`` and raises.
    """
    try:
        return _read_replies(connection, count)
    except BaseException:
        connection.disconnect()
        raise


#: redis-py's own reply read, which :func:`_read_replies` does without when a class keeps it.
_STOCK_READ = AbstractConnection.read_response


def _read_replies(connection: Any, count: int) -> list[Any]:
    """``count`` replies, error replies as exception objects; any other failure raises.

    Straight from the connection's hiredis reader when it has one: redis-py's
    ``read_response`` goes through three layers of checks per reply, about 8 us of the 6
    replies of a producer's enqueue (``HeldConnections.call`` of the MULTI/EXEC write in a
    loop, 45 -> 37 us of CPU a call; served ``POST /queue/members`` 4,846 -> 5,220 req/s,
    medians of 6 alternating wrk rounds). Its error handling is kept: a connection error reply
    (``LOADING``) is raised, and so is a socket error, as redis-py's ``ConnectionError``; a
    RESP3 push message goes to the parser's push handler and is not a reply.
    """
    parser = connection._parser
    reader = getattr(parser, "_reader", None)
    if reader is None or _NOT_ENOUGH_DATA is None or type(connection).read_response is not _STOCK_READ:
        # A connection class with a read of its own is read through it: the Sentinel's turns a
        # demoted master's READONLY, the cluster slot's a MOVED, into a dropped connection.
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    replies = []
    gets = reader.gets
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    while len(replies) < count:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            try:
                parser.read_from_socket()
            except OSError as exc:
                where = connection._host_error()
                raise RedisConnectionError(f"Error while reading from {where}: {exc}") from exc
            continue
        if push is not None and reply.__class__ is push:
            parser.handle_push_response(reply)
            continue
        if isinstance(reply, RedisConnectionError):
            raise reply
        if reply.__class__ is list and reply and isinstance(reply[0], RedisConnectionError):
            raise reply[0]
        replies.append(reply)
    if connection.health_check_interval:
        # As read_response does: a connection that just answered needs no PING before its next use.
        connection.next_health_check = time.monotonic() + connection.health_check_interval
    return replies


def first_error(replies: Sequence[Any]) -> ResponseError | None:
    """The first error reply among ``replies``, if any."""
    return next((reply for reply in replies if isinstance(reply, ResponseError)), None)


def round_trip(connection: Connection, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` at once and read every reply; raise the first error reply after all are read."""
    send(connection, pack(commands, connection))
    replies = read(connection, len(commands))
    error = first_error(replies)
    if error is not None:
        raise error
    return replies


def script_loads(scripts: Iterable[LuaScript]) -> list[tuple[str, str, str]]:
    """The ``SCRIPT LOAD`` commands of ``scripts``."""
    return [("SCRIPT", "LOAD", script.source) for script in scripts]


def load_scripts(connection: Connection, scripts: Iterable[LuaScript]) -> None:
    """``SCRIPT LOAD`` every script on ``connection``: the one answer to a ``NOSCRIPT`` reply.

    A server lacks a script after a restart, a failover to a replica that never ran it, or
    ``SCRIPT FLUSH``; the caller loads them all and sends its call again.
    """
    round_trip(connection, script_loads(scripts))


def evalsha(script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """The ``EVALSHA`` command calling ``script``, for :func:`pack`."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def stale(connection: Connection) -> bool:
    """Whether the server closed ``connection`` or left unread data on it."""
    try:
        return bool(connection.can_read())
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return True


#: A held connection idle for longer is checked for a close by the server before it is used.
IDLE_CHECK_SECONDS = 1.0


class _Lease:
    """A connection checked out of a pool for one thread; given back when the thread ends."""

    def __init__(self, pool: Any) -> None:
        self.connection: Any = pool.get_connection()
        self.pid = os.getpid()
        self.used_at = time.monotonic()
        #: Replies sent for and not read yet (:meth:`HeldConnections.send`).
        self.unread = 0
        weakref.finalize(self, _give_back, pool, self.connection, self.pid)


def _give_back(pool: Any, connection: Any, pid: int) -> None:
    if pid == os.getpid():
        pool.release(connection)


class HeldConnections(threading.local):
    """One connection per thread kept checked out of ``client``'s pool between calls.

    Taking a connection from the pool and giving it back costs a readiness ``poll`` and the
    pool's bookkeeping on every call (12% of the worker's loop on trivial jobs, under
    ``py-spy``); a held connection skips both. The pool still tracks it
    (closing the pool closes it) and gets it back when the thread ends. One idle for over
    :data:`IDLE_CHECK_SECONDS` is checked as the pool checks the ones it hands out, so a
    connection the server closed meanwhile is reconnected rather than failed and retried.
    After a fork the parent's connection is left alone.

    :meth:`send` and :meth:`read` split a call to overlap its round trip with work; a
    connection whose replies were never read (an exception in between) is reconnected before
    its next use, so replies never come out of step.
    """

    lease: _Lease | None = None

    def __init__(self, client: Redis) -> None:
        self.client = client

    def call(self, packed: bytes, count: int = 1) -> list[Any]:
        """Send ``packed`` (``count`` commands) on this thread's connection and read the replies.

        Error replies come back in the list; any other failure drops the connection (a new
        one is taken next time) and raises.
        """
        self.send(packed, count)
        return self.read()

    def send(self, packed: bytes, count: int = 1) -> None:
        """Write ``packed`` (``count`` commands); :meth:`read` reads their replies."""
        lease = self.lease
        if lease is None or lease.pid != os.getpid():
            lease = self.lease = _Lease(self.client.connection_pool)
        connection = lease.connection
        now = time.monotonic()
        idle = now - lease.used_at > IDLE_CHECK_SECONDS
        lease.used_at = now
        if lease.unread or (idle and stale(connection)):
            connection.disconnect()
        lease.unread = count
        try:
            connection.send_packed_command([packed])
        except BaseException:
            self.drop()
            raise

    def read(self) -> list[Any]:
        """The replies to the last :meth:`send` (error replies in the list)."""
        lease = self.lease
        if lease is None or not lease.unread:
            raise RedisConnectionError("no replies to read: the connection was dropped")
        connection = lease.connection
        try:
            replies = _read_replies(connection, lease.unread)
        except BaseException:
            self.drop()
            raise
        lease.unread = 0
        return replies

    def socket(self) -> Any:
        """The socket of this thread's connection, ``None`` when it has none (not connected yet)."""
        lease = self.lease
        return None if lease is None or lease.pid != os.getpid() else lease.connection._sock

    def drop(self) -> None:
        """Disconnect this thread's connection and give it back; the next call takes another."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.connection.disconnect()

    def load_scripts(self, scripts: Sequence[LuaScript]) -> None:
        """:func:`load_scripts` on this thread's connection."""
        error = first_error(self.call(pack(script_loads(scripts)), len(scripts)))
        if error is not None:
            raise error
