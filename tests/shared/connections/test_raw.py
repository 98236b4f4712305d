"""Held connections read every reply of a call in step, on hiredis' reader or redis-py's parsers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis._parsers import _RESP2Parser, _RESP3Parser
from redis.exceptions import BusyLoadingError, MovedError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.connections.raw import HeldConnections, pack
from tests.servers import RedisProc

#: (RESP version, parser class): hiredis' reader (the default) and redis-py's own parsers.
READERS = [(2, None), (3, None), (2, _RESP2Parser), (3, _RESP3Parser)]


@pytest.fixture(params=READERS, ids=["resp2-hiredis", "resp3-hiredis", "resp2-python", "resp3-python"])
def held(request: pytest.FixtureRequest, r: redis.Redis, redis_proc: RedisProc) -> Iterator[HeldConnections]:
    protocol, parser = request.param
    options = {"parser_class": parser} if parser is not None else {}
    client = redis.Redis.from_url(redis_proc.url, protocol=protocol, **options)
    yield HeldConnections(client)
    client.close()


def test_error_replies_come_back_in_place_and_the_connection_stays_in_step(held: HeldConnections) -> None:
    commands = [("SET", "k", "v"), ("INCR", "k"), ("MULTI",), ("INCR", "k"), ("GET", "k"), ("EXEC",)]
    replies = held.call(pack(commands), len(commands))
    assert replies[0] == b"OK"  # raw replies: no response callbacks
    assert isinstance(replies[1], ResponseError) and "not an integer" in str(replies[1])
    assert replies[2:5] == [b"OK", b"QUEUED", b"QUEUED"]
    assert isinstance(replies[5][0], ResponseError) and replies[5][1] == b"v"
    assert held.call(pack([("PING",), ("GET", "k")]), 2) == [b"PONG", b"v"]


def test_a_connection_error_reply_is_raised_and_the_connection_replaced(held: HeldConnections) -> None:
    loading = ("EVAL", "return redis.error_reply('LOADING Redis is loading the dataset in memory')", "0")
    with pytest.raises(BusyLoadingError):
        held.call(pack([loading, ("PING",)]), 2)
    assert held.lease is None  # dropped: its second reply was never read
    assert held.call(pack([("ECHO", "next")]), 1) == [b"next"]


def test_a_push_message_between_calls_is_not_taken_for_a_reply(r: redis.Redis, redis_proc: RedisProc) -> None:
    client = redis.Redis.from_url(redis_proc.url, protocol=3)
    held = HeldConnections(client)
    r.set("tracked", "1")
    assert held.call(pack([("CLIENT", "TRACKING", "ON"), ("GET", "tracked")]), 2)[1] == b"1"
    r.set("tracked", "2")  # the server pushes an invalidation of "tracked" to the held connection
    assert held.call(pack([("GET", "tracked"), ("ECHO", "after")]), 2) == [b"2", b"after"]
    client.close()


def test_a_connection_the_server_closes_mid_reply_raises_a_connection_error(
    held: HeldConnections, r: redis.Redis
) -> None:
    held.call(pack([("CLIENT", "SETNAME", "held")]), 1)
    held.send(pack([("BLPOP", "never", "5")]), 1)
    [held_client] = [c for c in r.client_list() if c["name"] == "held"]
    r.client_kill_filter(_id=held_client["id"])
    with pytest.raises(RedisConnectionError):
        held.read()
    assert held.lease is None
    assert held.call(pack([("ECHO", "again")]), 1) == [b"again"]


def test_a_socket_error_while_reading_raises_a_connection_error(held: HeldConnections) -> None:
    held.send(pack([("PING",)]), 1)
    held.lease.connection._sock.close()  # type: ignore[union-attr]  # the next recv fails with EBADF
    with pytest.raises(RedisConnectionError):
        held.read()
    assert held.lease is None
    assert held.call(pack([("ECHO", "again")]), 1) == [b"again"]


def test_each_answer_puts_off_the_connections_next_health_check(redis_proc: RedisProc) -> None:
    client = redis.Redis.from_url(redis_proc.url, health_check_interval=30)
    held = HeldConnections(client)
    held.call(pack([("PING",)]), 1)
    connection = held.lease.connection  # type: ignore[union-attr]
    first = connection.next_health_check
    time.sleep(0.05)
    held.call(pack([("ECHO", "answered")]), 1)
    # As redis-py's read_response does: a busy connection is never PINGed before a use.
    assert connection.next_health_check >= first + 0.04
    client.close()


class _Renaming(redis.Connection):
    """A connection class with a read of its own (as the Sentinel's and the cluster slot's have)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except MovedError as exc:
            self.disconnect()
            raise RedisConnectionError(f"renamed: {exc}") from exc


def test_a_connection_class_with_its_own_read_is_read_through_it(redis_proc: RedisProc) -> None:
    pool = redis.ConnectionPool.from_url(redis_proc.url, connection_class=_Renaming)
    client = redis.Redis(connection_pool=pool)
    held = HeldConnections(client)
    with pytest.raises(RedisConnectionError, match="renamed: "):
        held.call(pack([("EVAL", "return redis.error_reply('MOVED 1 127.0.0.1:1')", "0")]), 1)
    assert held.lease is None
    assert held.call(pack([("ECHO", "ok")]), 1) == [b"ok"]
    client.close()
