"""The FastWorker subclasses that RQ's tests get in the FastWorker run (see :mod:`.patches`).

One class per RQ worker class a test can ask for, so that ``Worker`` and ``SimpleWorker`` stay
two unrelated classes as in RQ, and the dequeue strategies of ``RoundRobinWorker`` and
``RandomWorker`` (their only difference from ``Worker``) apply to FastWorker's claims.
RQ's ``HerokuWorker`` and ``SpawnWorker`` are about how a work horse is started and killed,
which FastWorker does not have: they stay RQ's, and the runner counts their tests as not
exercising FastWorker.
"""

from __future__ import annotations

from rq.worker import RandomWorker, RoundRobinWorker

from consumer.worker import FastWorker


class FastAsWorker(FastWorker):
    """FastWorker where a test asks for ``rq.Worker`` (RQ's forking worker)."""

    rq_suite_fast = True


class FastAsSimpleWorker(FastWorker):
    """FastWorker where a test asks for ``rq.SimpleWorker``."""

    rq_suite_fast = True


class FastRoundRobinWorker(FastWorker):
    """FastWorker with ``RoundRobinWorker``'s queue order."""

    rq_suite_fast = True
    reorder_queues = RoundRobinWorker.reorder_queues


class FastRandomWorker(FastWorker):
    """FastWorker with ``RandomWorker``'s queue order."""

    rq_suite_fast = True
    reorder_queues = RandomWorker.reorder_queues


#: RQ's class names and what the FastWorker run puts under them.
SWAPS: dict[str, type[FastWorker]] = {
    "Worker": FastAsWorker,
    "SimpleWorker": FastAsSimpleWorker,
    "RoundRobinWorker": FastRoundRobinWorker,
    "RandomWorker": FastRandomWorker,
}
