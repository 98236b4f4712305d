"""Our worker and stock RQ: the jobs ``rq worker`` runs, and RQ's own ``Queue.enqueue``.

Both take the jobs from the queue ``bench`` with RQ's JSON serializer, as ``bench/worker.py``
fills it; ``Queue.enqueue`` (two round trips, a ``Job`` per call) rather than the producer's
one-script enqueue, so that the latency regime times the worker, not our producer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.peers.stamps import stamp

QUEUE = "bench"


def noop(index: int) -> None:
    """A no-op job."""
    stamp(index, time.time())


def io(index: int) -> None:
    """A 10 ms I/O job."""
    start = time.time()
    time.sleep(0.01)
    stamp(index, start)


class Producer:
    """Enqueues into ``bench`` with ``Queue.enqueue``."""

    def __init__(self, url: str) -> None:
        self.conn = Redis.from_url(url)
        self.queue = Queue(QUEUE, connection=self.conn, serializer=JSONSerializer)

    def send(self, kind: str, index: int) -> None:
        self.queue.enqueue(f"{__name__}.{kind}", index)

    def send_many(self, kind: str, indices: Iterable[int]) -> None:
        """Pipelined in batches of 1,000, as ``bench/worker.py`` fills its queue."""
        batch: list[int] = []
        for index in indices:
            batch.append(index)
            if len(batch) == 1000:
                self._pipelined(kind, batch)
                batch = []
        if batch:
            self._pipelined(kind, batch)

    def _pipelined(self, kind: str, indices: list[int]) -> None:
        with self.conn.pipeline() as pipe:
            for index in indices:
                self.queue.enqueue(f"{__name__}.{kind}", index, pipeline=pipe)
            pipe.execute()

    def close(self) -> None:
        self.conn.close()


def producer(url: str) -> Producer:
    """A producer for this queue."""
    return Producer(url)
