"""Waiting for work on several queues at once, without taking a job.

Redis has no blocking wait over several lists that leaves the job in place (``BLPOP`` and
``BLMPOP`` take it, and a worker that dies before it claims the job loses it; ``BLMOVE`` takes
one list). So each queue gets a connection of its own, blocked in ``BLMOVE`` of the list onto
itself, and the worker waits on all their sockets: the first queue to get a job wakes it, and
the waits still blocked stay blocked for the next time. A worker on three queues picked up a
new job 153 ms (p50) after its enqueue when it polled each queue in turn for 0.12 s; this
wakes it within a round trip.
"""

from __future__ import annotations

import select
import socket
import weakref
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from rq.exceptions import StopRequested


class StopAlarm:
    """A byte a stop request leaves in a socket pair, for every later wait for work to find.

    RQ's signal handler ends an idle worker's wait by raising ``StopRequested`` from the
    blocked read. A handler that runs inside a finalizer has that raise dropped by Python; one
    that runs after the loop's last look at :attr:`stop_requested` and before its blocking read
    would then leave the wait to its timeout (``dequeue_timeout``, 30 s by default) although the
    request is recorded. The byte stays until the worker is gone, so a wait that also watches it
    ends at once, whenever the request came.
    """

    def __init__(self) -> None:
        self._read_end, self._write_end = socket.socketpair()
        self._read_end.setblocking(False)
        self._write_end.setblocking(False)
        # Closed with the alarm (the worker), which may outlive one work() and be run again.
        weakref.finalize(self, _close, self._read_end, self._write_end)

    def ring(self) -> None:
        """Leave the byte (from a signal handler too: one non-blocking send)."""
        try:
            self._write_end.send(b"!")
        except OSError:
            pass  # the pair is full of earlier rings, or closed

    def fileno(self) -> int:
        """For ``select``: readable once rung."""
        return self._read_end.fileno()

    def wait(self, sock: socket.socket, timeout: float | None) -> bool:
        """Block until ``sock`` is readable (``True``), the alarm rings or ``timeout`` passes (``False``)."""
        ready = readable([sock.fileno(), self.fileno()], timeout)
        return sock.fileno() in ready and self.fileno() not in ready


def readable(fds: list[int], timeout: float | None) -> set[int]:
    """Those of ``fds`` that are readable (or closed) within ``timeout`` seconds (``None``: no limit).

    ``poll``, not ``select``: a worker whose jobs hold many files can have sockets numbered past
    ``select``'s limit of 1,024.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        sock.close()


class QueueWaits:
    """One blocked ``BLMOVE`` per queue, each on its own connection of ``client``'s pool."""

    def __init__(self, client: Redis, alarm: StopAlarm) -> None:
        self.client = client
        self.alarm = alarm
        #: Queue key -> the connection whose ``BLMOVE`` on it has not answered yet.
        self._blocked: dict[str, Any] = {}

    def wait(self, keys: list[str], timeout: float) -> bool:
        """Block until one of ``keys`` holds a job (``True``) or ``timeout`` seconds pass.

        A wait whose own server-side timeout ran out also wakes it: the caller then finds no
        job and waits again. A stop request (the :class:`StopAlarm`) raises ``StopRequested``.
        Anything raised here (a stop, a lost master) closes every wait.
        """
        try:
            for key in keys:
                if key not in self._blocked:
                    connection = self.client.connection_pool.get_connection()
                    self._blocked[key] = connection
                    # Answers nil after ``timeout`` at the latest, so no connection blocks forever.
                    connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", f"{timeout + 1:.3f}")
            sockets = {self._blocked[key]._sock.fileno(): key for key in keys}
            ready = readable([*sockets, self.alarm.fileno()], timeout)
            if self.alarm.fileno() in ready:
                raise StopRequested()
            for fd in ready:
                self._answered(sockets[fd])
            return bool(ready)
        except BaseException:
            self.close()
            raise

    def _answered(self, key: str) -> None:
        connection = self._blocked.pop(key)
        try:
            connection.read_response()  # the job's id, or nil: either way the wait is over
        except ResponseError:
            connection.disconnect()  # e.g. UNBLOCKED when the server turned replica
        except BaseException:
            connection.disconnect()
            self.client.connection_pool.release(connection)
            raise
        self.client.connection_pool.release(connection)

    def close(self) -> None:
        """Drop every blocked wait (their connections are closed and given back)."""
        blocked, self._blocked = self._blocked, {}
        for connection in blocked.values():
            connection.disconnect()
            self.client.connection_pool.release(connection)
