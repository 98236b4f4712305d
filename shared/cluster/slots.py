"""Clients pinned to one hash slot of a Redis Cluster, following the slot to whichever master owns it.

RQ cannot run on a cluster client (its transactions, ``WATCH`` loops and multi-queue pops
span keys), but every key of one namespace (an RQ key prefix with a hash tag, ``{member}``)
hashes to one slot, so the namespace needs only an ordinary connection to that slot's
master. :class:`SlotConnectionPool` is that connection pool: like redis-py's Sentinel pool
it asks where the master is on every new connection, here from the cluster's own slot map
(``CLUSTER SLOTS`` from any known node), and drops its idle connections when the owner
changes. A ``MOVED``/``ASK``/``CLUSTERDOWN`` reply or a demoted master's ``READONLY`` becomes
a ``ConnectionError`` after the map is marked stale, so callers retry exactly as they do
across a Sentinel failover.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger(__name__)

Address = tuple[str, int]

#: Replies that mean "this node no longer serves the slot": look it up again.
_SLOT_MOVED = (MovedError, AskError, ClusterDownError, TryAgainError, ReadOnlyError)


def tag_slot(tag: str) -> int:
    """The hash slot of every key carrying hash tag ``tag`` (``{member}`` or ``member``)."""
    return key_slot(("{" + tag.strip("{}") + "}").encode())


class ClusterMap:
    """Which master serves which slots, read from the cluster and re-read when it is stale.

    One map per process serves every namespace's pool. It asks the seed nodes first, then
    every node it has seen, so a dead seed does not stop the lookup.
    """

    #: A map is re-read at most this often when clients keep reporting it stale.
    MIN_REFRESH_SECONDS = 0.05

    def __init__(self, seeds: Sequence[Address], **options: Any) -> None:
        if not seeds:
            raise ValueError("a cluster map needs at least one seed node")
        self.seeds = list(seeds)
        self.options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, **options}
        self._ranges: list[tuple[int, int, Address, list[Address]]] = []
        self._known: list[Address] = list(seeds)
        self._stale = True
        self._read_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Mark the map stale: the next lookup asks the cluster again."""
        self._stale = True

    def refresh(self) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers; raise ``ConnectionError`` if none does."""
        errors = []
        for host, port in dict.fromkeys([*self.seeds, *self._known]):
            client = Redis(host=host, port=port, **self.options)
            try:
                reply = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            except RedisError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            finally:
                client.close()
            ranges = []
            for item in reply:
                start, end, master, *replicas = item
                address = (_text(master[0]) or host, int(master[1]))
                copies = [(_text(r[0]) or host, int(r[1])) for r in replicas]
                ranges.append((int(start), int(end), address, copies))
            if not ranges:
                errors.append(f"{host}:{port}: no slots assigned")
                continue
            self._ranges = sorted(ranges)
            self._known = list(dict.fromkeys([*self._known, *(a for r in ranges for a in [r[2], *r[3]])]))
            self._stale = False
            self._read_at = time.monotonic()
            return
        raise RedisConnectionError("no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _fresh(self) -> None:
        if not self._stale:
            return
        with self._lock:
            if self._stale:
                pause = self.MIN_REFRESH_SECONDS - (time.monotonic() - self._read_at)
                if pause > 0:
                    time.sleep(pause)
                self.refresh()

    def owner(self, slot: int) -> Address:
        """The master serving ``slot`` (``ConnectionError`` while no node knows one)."""
        self._fresh()
        for start, end, master, _ in self._ranges:
            if start <= slot <= end:
                return master
        self.invalidate()
        raise RedisConnectionError(f"no master serves slot {slot} (cluster down or resharding)")

    def masters(self) -> list[tuple[Address, list[tuple[int, int]], list[Address]]]:
        """Every master with its slot ranges and replicas."""
        self._fresh()
        by_master: dict[Address, tuple[list[tuple[int, int]], list[Address]]] = {}
        for start, end, master, replicas in self._ranges:
            ranges, known = by_master.setdefault(master, ([], []))
            ranges.append((start, end))
            known.extend(r for r in replicas if r not in known)
        return [(master, ranges, replicas) for master, (ranges, replicas) in by_master.items()]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SlotConnection(Connection):
    """A connection to whichever master serves its pool's slot."""

    def __init__(self, **kwargs: Any) -> None:
        self.slot_pool: SlotConnectionPool = kwargs.pop("slot_pool")
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _connect(self) -> Any:
        self.host, self.port = self.slot_pool.master_address()
        try:
            return super()._connect()  # type: ignore[no-untyped-call]
        except OSError:
            self.slot_pool.cluster.invalidate()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """The reply; a moved slot or a demoted master is a ``ConnectionError`` (after a new lookup)."""
        kwargs.setdefault("disconnect_on_error", True)
        try:
            return super().read_response(*args, **kwargs)
        except _SLOT_MOVED as exc:
            if isinstance(exc, AskError) and exc.slot_id != self.slot_pool.slot:
                # A key of another slot: a bug in the caller, not a moved slot (MovedError is an AskError).
                pool = self.slot_pool
                outside = f"a key outside namespace {pool.tag} (slot {exc.slot_id}, not {pool.slot})"
                raise ResponseError(outside) from exc
            self.slot_pool.cluster.invalidate()
            self.disconnect()  # type: ignore[no-untyped-call]
            moved = f"slot {self.slot_pool.slot} left {self.host}:{self.port}: {exc}"
            raise RedisConnectionError(moved) from exc
        except ResponseError as exc:
            if str(exc).startswith("CROSSSLOT"):
                raise ResponseError(
                    f"{exc} (a namespace's keys must share its hash tag {self.slot_pool.tag})"
                ) from exc
            raise


class SlotSSLConnection(SlotConnection, SSLConnection):
    """:class:`SlotConnection` over TLS."""


class SlotConnectionPool(ConnectionPool):
    """A pool of connections to the master of one slot (the slot of hash tag ``tag``)."""

    def __init__(self, cluster: ClusterMap, tag: str, **kwargs: Any) -> None:
        ssl = kwargs.pop("ssl", False)
        kwargs.setdefault("connection_class", SlotSSLConnection if ssl else SlotConnection)
        super().__init__(**kwargs)
        self.cluster = cluster
        self.tag = tag
        self.slot = tag_slot(tag)
        self.current: Address | None = None
        self.connection_kwargs["slot_pool"] = weakref.proxy(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(tag={self.tag}, slot={self.slot}, master={self.current})>"

    def master_address(self) -> Address:
        """The slot's master now; idle connections to an earlier one are dropped."""
        address = self.cluster.owner(self.slot)
        if self.current != address:
            if self.current is not None:
                logger.warning(
                    "slot %d (%s) moved from %s:%s to %s:%s", self.slot, self.tag, *self.current, *address
                )
                # As redis-py's Sentinel pool: idle connections reconnect to the new master.
                self.disconnect(inuse_connections=False)
            self.current = address
        return address

    def owns_connection(self, connection: Any) -> bool:
        """Connections to a former master are closed on release, not reused."""
        unconnected = getattr(connection, "_sock", None) is None
        here = unconnected or (connection.host, connection.port) == self.current
        return bool(here and super().owns_connection(connection))
