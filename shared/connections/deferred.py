"""Small writes that ride with the worker's next round trip instead of taking one of their own.

A job's success callback counts the job (``shared.stats``: ten ``HINCRBY``-type commands).
Under RQ's own worker classes it sends them at once, in a pipeline; under ``FastWorker`` the
callback runs inside :func:`collecting`, and the commands go out with the job's success writes
and the next claim, in the same round trip: the member job took 2.08 round trips per job
without this, 1.02 with it (``python -m bench.per_job``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis

Command = tuple[Any, ...]


class Commands(list[Command]):
    """Commands built with the pipeline methods the stats use, sent later by :func:`write`."""

    def hincrby(self, name: str, key: str, amount: int = 1) -> None:
        """``HINCRBY name key amount``."""
        self.append(("HINCRBY", name, key, amount))

    def hincrbyfloat(self, name: str, key: str, amount: float) -> None:
        """``HINCRBYFLOAT name key amount``."""
        self.append(("HINCRBYFLOAT", name, key, repr(float(amount))))

    def expire(self, name: str, seconds: int) -> None:
        """``EXPIRE name seconds``."""
        self.append(("EXPIRE", name, int(seconds)))


class _Sink(threading.local):
    connection: Redis | None = None
    commands: Commands | None = None


_SINK = _Sink()


@contextmanager
def collecting(connection: Redis) -> Iterator[Commands]:
    """Within the block, this thread's :func:`write` calls on ``connection`` are collected, not sent."""
    previous = (_SINK.connection, _SINK.commands)
    commands = Commands()
    _SINK.connection, _SINK.commands = connection, commands
    try:
        yield commands
    finally:
        _SINK.connection, _SINK.commands = previous


def write(connection: Redis, commands: Commands) -> None:
    """Send ``commands`` in one pipeline, or leave them to the enclosing :func:`collecting` block."""
    if _SINK.commands is not None and _SINK.connection is connection:
        _SINK.commands.extend(commands)
        return
    pipe: Any = connection.pipeline(transaction=False)
    with pipe:
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()
