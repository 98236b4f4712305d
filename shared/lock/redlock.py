"""Redlock over N independent Redis masters, with fencing tokens, a watchdog and prompt hand-off.

One acquisition sends one script to every node at once (all requests are written before any
reply is read, so N nodes cost about one round trip): ``SET key token NX PX ttl`` and, where it
succeeds, ``INCR`` of the lock's fence counter. The lock is held when a majority said yes within
the validity time (TTL minus elapsed time minus clock drift).

The fencing token is the highest counter value among the majority that granted the lock.
Before the lease is handed out every granting node's counter is raised to that token, so each
node holding our key has ``counter >= token``. A later acquisition needs a majority too, which
shares a node with ours; on that node its ``SET NX`` ran after our key was gone (released or
expired), so after the raise, and its ``INCR`` there yields more than our token. Hence tokens
grow strictly per lock name as long as a majority of nodes keeps its data.

Waiters do not poll: a failed attempt marks the lock as awaited on each node that refused, and
a release pushes onto a notification list there, which the first waiter in line takes with
``BLPOP``. A lock whose holder died wakes its waiters when its TTL runs out.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from redis import Redis
from redis.exceptions import RedisError

from shared.connections import raw
from shared.exceptions import LockLostError, LockTimeoutError, LockUnavailableError
from shared.keys import FENCE_PREFIX, KEYS, LOCK_NOTIFY_PREFIX, LOCK_PREFIX, LOCK_WAIT_PREFIX, Keys
from shared.lock.nodes import ACQUIRE, EXTEND, NODE_ERRORS, RAISE_FENCE, RELEASE, ClusterNode, Node, fan_out
from shared.settings import Settings

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TTL = 10.0
DEFAULT_NODE_TIMEOUT = 0.5
CLOCK_DRIFT_FACTOR = 0.01


class Lease:
    """A held lock: its fencing token, validity, release, extension and watchdog."""

    def __init__(
        self, manager: Redlock, name: str, token: str, fence: int, ttl: float, valid_until: float
    ) -> None:
        self.manager = manager
        self.name = name
        self.token = token
        #: Strictly greater than the token of every earlier acquisition of ``name``.
        self.fence = fence
        self.ttl = ttl
        self.valid_until = valid_until
        self.released = False
        self.lost_event = threading.Event()
        self.on_lost: Callable[[Lease], None] | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        # Re-entrant: an ``on_lost`` callback run by the watchdog may release the lease.
        self._mutex = threading.RLock()

    @property
    def lost(self) -> bool:
        """Whether the watchdog or a release found the lock gone from a majority."""
        return self.lost_event.is_set()

    def remaining(self) -> float:
        """Seconds the lock is still safely ours (0 when lost or expired)."""
        if self.lost or self.released:
            return 0.0
        return max(0.0, self.valid_until - time.monotonic())

    def check(self) -> None:
        """Raise :class:`LockLostError` unless the lock is still safely held."""
        if self.remaining() <= 0:
            raise LockLostError(f"lock {self.name!r} (fence {self.fence}) is no longer held")

    def extend(self, ttl: float | None = None) -> bool:
        """Reset the TTL on every node that still has our token; false when under a majority."""
        ttl = self.ttl if ttl is None else ttl
        with self._mutex:
            if self.released or self.lost:
                return False
            ok, valid_until = self.manager._extend(self.name, self.token, ttl)
            if ok:
                self.valid_until = valid_until
                self.manager._count(extended=1)
                return True
            self._mark_lost()
            return False

    def release(self) -> bool:
        """Delete the lock on every node (compare-and-delete); false when it had already been lost."""
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join()
        with self._mutex:
            if self.released:
                return False
            self.released = True
            expired = time.monotonic() >= self.valid_until
            deleted = self.manager._release(self.name, self.token)
            if self.lost:
                return False
            # Under a majority deleted but still valid: nodes died while we held it, nobody else could
            # take it meanwhile. Expired and gone from a majority: it was lost.
            if deleted >= self.manager.quorum or not expired:
                self.manager._count(released=1)
                return True
            self.lost_event.set()
            self.manager._count(lost=1)
            logger.warning("lock %r had expired before its release (fence %s)", self.name, self.fence)
            return False

    def _mark_lost(self) -> None:
        if self.lost_event.is_set():
            return
        self.lost_event.set()
        self.manager._count(lost=1)
        logger.warning("lock %r lost (fence %s)", self.name, self.fence)
        if self.on_lost is not None:
            self.on_lost(self)

    def start_watchdog(self, on_lost: Callable[[Lease], None] | None = None) -> None:
        """Extend the lock every third of its TTL until release; on failure mark it lost."""
        self.on_lost = on_lost
        self._watchdog = threading.Thread(target=self._watch, name=f"lock-watchdog-{self.name}", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.extend():
                return

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        self.release()
        if exc_type is None and self.lost:
            raise LockLostError(f"lock {self.name!r} (fence {self.fence}) was lost while held")


def lock_keys(name: str) -> tuple[str, str, str, str]:
    """(lock, fence counter, waiters flag, notification list) of lock ``name`` on each node.

    All four carry ``{name}`` as their hash tag, so on a Redis Cluster they share one slot
    (the scripts touch several of them at once): ``archive:lock:{goods:7}``.
    """
    tag = "{" + name + "}"
    return (LOCK_PREFIX + tag, FENCE_PREFIX + tag, LOCK_WAIT_PREFIX + tag, LOCK_NOTIFY_PREFIX + tag)


class Redlock:
    """The Redlock algorithm over independent Redis masters; one instance per process."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        stats: Redis | None = None,
        stats_keys: Keys = KEYS,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        password: str | None = None,
        retry_delay: float = 0.02,
        nodes: Sequence[Node] | None = None,
    ) -> None:
        if not urls and not nodes:
            raise ValueError("a Redlock needs at least one Redis URL")
        self.nodes = list(nodes) if nodes else [Node(url, node_timeout, password) for url in urls]
        self.quorum = len(self.nodes) // 2 + 1
        self.stats = stats
        self.stats_keys = stats_keys
        self.node_timeout = node_timeout
        self.retry_delay = retry_delay

    @classmethod
    def from_settings(cls, settings: Settings, stats: Redis | None = None, **options: Any) -> Redlock:
        """The lock over ``settings.lock_urls``, counting statistics in ``stats``.

        On a Redis Cluster without ``LOCK_REDIS_URLS`` the cluster is the lock's one node,
        each lock on the master of its name's slot.
        """
        if settings.cluster_nodes and not settings.lock_redis_urls:
            from shared.cluster.clients import cluster_map

            timeout = options.pop("node_timeout", DEFAULT_NODE_TIMEOUT)
            node = ClusterNode(cluster_map(settings), timeout, settings.redis_password)
            return cls((), stats=stats, nodes=[node], node_timeout=timeout, **options)
        return cls(settings.lock_urls, stats=stats, password=settings.redis_password, **options)

    def close(self) -> None:
        """Disconnect from every node."""
        for node in self.nodes:
            node.close()

    def _count(self, **fields: int) -> None:
        if self.stats is None:
            return
        try:
            pipe = self.stats.pipeline(transaction=False)
            for name, amount in fields.items():
                pipe.hincrby(self.stats_keys.lock_stats, name, amount)
            pipe.execute()
        except RedisError as exc:
            logger.debug("lock statistics not counted: %s", exc)

    def _drift(self, ttl_ms: int) -> float:
        return (ttl_ms * CLOCK_DRIFT_FACTOR + 2) / 1000

    def _attempt(self, name: str, token: str, ttl_ms: int) -> tuple[Lease | None, int, list[tuple[int, int]]]:
        """One try on every node: (lease or None, nodes that answered, [(node index, holder's ms left)])."""
        keys = lock_keys(name)[:3]
        start = time.monotonic()
        replies = fan_out([(node, ACQUIRE, keys, (token, ttl_ms)) for node in self.nodes])
        granted = {i: r for i, r in enumerate(replies) if isinstance(r, int) and r > 0}
        held = [(i, -r) for i, r in enumerate(replies) if isinstance(r, int) and r <= 0]
        answered = len(granted) + len(held)
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception):
                logger.debug("lock node %s failed: %s", self.nodes[i].url, reply)
        if len(granted) >= self.quorum:
            fence = max(granted.values())
            lagging = [i for i, value in granted.items() if value < fence]
            if lagging:
                raised = fan_out([(self.nodes[i], RAISE_FENCE, keys[1:2], (fence,)) for i in lagging])
                for i, reply in zip(lagging, raised, strict=True):
                    if reply != 1:
                        del granted[i]
            valid_until = start + ttl_ms / 1000 - self._drift(ttl_ms)
            if len(granted) >= self.quorum and time.monotonic() < valid_until:
                return Lease(self, name, token, fence, ttl_ms / 1000, valid_until), answered, held
        # Not ours: undo the partial grant, and on nodes that failed too (their SET may have landed).
        undo = [i for i, r in enumerate(replies) if not (isinstance(r, int) and r <= 0)]
        if undo:
            self._release(name, token, undo)
        return None, answered, held

    def acquire(
        self,
        name: str,
        ttl: float = DEFAULT_TTL,
        *,
        timeout: float | None = 10.0,
        auto_extend: bool = False,
        on_lost: Callable[[Lease], None] | None = None,
    ) -> Lease:
        """Take lock ``name`` for ``ttl`` seconds, waiting up to ``timeout`` (0: try once, None: forever).

        Raises :class:`LockUnavailableError` at once when fewer than a majority of nodes
        answer, and :class:`LockTimeoutError` when others held the lock for the whole wait.
        With ``auto_extend`` a watchdog keeps the lock until release and calls ``on_lost``
        (and sets ``lease.lost``) if it cannot.
        """
        ttl_ms = max(1, int(ttl * 1000))
        token = os.urandom(16).hex()
        deadline = None if timeout is None else time.monotonic() + timeout
        contended = False
        while True:
            lease, answered, held = self._attempt(name, token, ttl_ms)
            if lease is not None:
                if contended:
                    self._count(acquired=1, contended=1)
                else:
                    self._count(acquired=1)
                if auto_extend:
                    lease.start_watchdog(on_lost)
                return lease
            if answered < self.quorum:
                self._count(failed=1)
                raise LockUnavailableError(
                    f"lock {name!r}: only {answered} of {len(self.nodes)} Redis nodes answered, "
                    f"a majority of {self.quorum} is needed"
                )
            contended = True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._count(failed=1, contended=1)
                raise LockTimeoutError(f"lock {name!r} still held by another owner after {timeout}s")
            self._wait(name, held, left)

    def _wait(self, name: str, held: list[tuple[int, int]], left: float | None) -> None:
        """Sleep until a release on a node that refused us, the holder's TTL, or ``left`` seconds."""
        jitter = random.uniform(0, self.retry_delay)
        if not held:
            # Split vote among competitors that each hold a minority: back off by a random amount.
            time.sleep(jitter if left is None else min(jitter, max(left, 0)))
            return
        index, holder_ms = held[0]
        wait = holder_ms / 1000 + jitter
        if left is not None:
            wait = min(wait, left)
        node = self.nodes[index]
        notify = lock_keys(name)[3]
        try:
            # (raw.send and raw.read drop the connection when they fail)
            conn = node.get(notify)
            raw.send(conn, raw.pack([("BLPOP", notify, f"{max(wait, 0.001):.3f}")]))
            if conn.can_read(timeout=wait + self.node_timeout + 0.2):
                raw.read(conn, 1)
                node.put(conn)
            else:
                conn.disconnect()
        except NODE_ERRORS as exc:
            node.stale()
            logger.debug("waiting on %s failed (%s); backing off", node.url, exc)
            time.sleep(jitter)

    def _release(self, name: str, token: str, indexes: Sequence[int] | None = None) -> int:
        lock, _, waiters, notify = lock_keys(name)
        keys = (lock, waiters, notify)
        chosen = range(len(self.nodes)) if indexes is None else indexes
        replies = fan_out([(self.nodes[i], RELEASE, keys, (token, 60_000)) for i in chosen])
        return sum(1 for r in replies if r == 1)

    def _extend(self, name: str, token: str, ttl: float) -> tuple[bool, float]:
        ttl_ms = max(1, int(ttl * 1000))
        start = time.monotonic()
        replies = fan_out([(node, EXTEND, lock_keys(name)[:1], (token, ttl_ms)) for node in self.nodes])
        valid_until = start + ttl_ms / 1000 - self._drift(ttl_ms)
        ok = sum(1 for r in replies if r == 1) >= self.quorum and time.monotonic() < valid_until
        return ok, valid_until

    @contextmanager
    def lock(self, name: str, ttl: float = DEFAULT_TTL, **options: Any) -> Iterator[Lease]:
        """``with redlock.lock("name") as lease:``; raises :class:`LockLostError` at exit if lost."""
        with self.acquire(name, ttl, **options) as lease:
            yield lease

    def locked(
        self, name: str, ttl: float = DEFAULT_TTL, **options: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator: run the function while holding lock ``name``."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                with self.lock(name, ttl, **options):
                    return func(*args, **kwargs)

            return wrapper

        return decorate
