"""RQ's scheduler, run in a thread: due retries and ``enqueue_at``/``enqueue_in`` jobs back to their queues.

RQ moves a job from a queue's scheduled registry back into the queue only in a worker started
with ``--with-scheduler``; with every worker started as RQ's documentation writes the command
(``rq worker -c consumer.settings -S json member``), a failed attempt's retry, scheduled a few
seconds ahead, would wait there for good. So the recovery monitor (``python -m
consumer.recovery``, run by ``redis-archive up`` and compose) and every producer process also
run RQ's own scheduler, one round a second. RQ's per-queue scheduler lock elects one mover
per queue among all of them (and any worker started with ``--with-scheduler``); the others
only try the lock again.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable

from redis import Redis
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from shared.constants import ALL_QUEUES

logger = logging.getLogger(__name__)

#: Seconds between rounds (RQ's own scheduler interval).
INTERVAL = 1.0


class ScheduledJobMover:
    """One process's share of RQ's scheduler: call :meth:`tick` every :data:`INTERVAL` seconds."""

    def __init__(
        self,
        connection: Redis,
        queues: Iterable[str] = ALL_QUEUES,
        *,
        role: str = "monitor",
        serializer: object = JSONSerializer,
    ) -> None:
        self.queues = frozenset(queues)
        name = f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.scheduler = RQScheduler(
            list(self.queues),
            connection=connection,
            interval=int(INTERVAL),
            # RQScheduler sets its logger's level; keep the one this process configured.
            logging_level=logging.getLogger("rq.scheduler").getEffectiveLevel(),
            serializer=serializer,
            name=name,
        )
        self._born = False

    @property
    def held(self) -> frozenset[str]:
        """The queues this process moves scheduled jobs for (it holds their scheduler lock)."""
        return frozenset(self.scheduler.acquired_locks)

    def tick(self) -> frozenset[str]:
        """One round: take or keep the queues' locks, then move the jobs that are due. Returns ``held``."""
        if not self._born:
            self.scheduler.register_birth()
            self._born = True
        if self.held != self.queues:
            # Locks held elsewhere expire when their holder dies (RQ: the interval + 60 s).
            self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if self.held:
            self.scheduler.heartbeat()  # type: ignore[no-untyped-call]
        if self.held:
            self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        return self.held

    def close(self) -> None:
        """Release the locks (another process takes over at once) and the scheduler's record."""
        if self._born:
            self.scheduler.stop()  # type: ignore[no-untyped-call]
