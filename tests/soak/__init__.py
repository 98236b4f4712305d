"""The mixed-fault soak, shared by ``bench/soak.py`` and ``tests/system/test_soak.py``.

Real processes only. Redis is a master, two replicas and three Sentinels
(``shared.stack.sentinel``, append-only files on, ``down-after-milliseconds`` 1000), with
durable enqueue (``ENQUEUE_MIN_REPLICAS=1``). Two lanes share it, each a ``redis-archive up``
on its own Redis database: the producer, one ``FastWorker``, one plain ``rq worker -c
consumer.settings -S json`` (RQ's own forking worker class, no ``--with-scheduler``) and the
recovery monitor. Lane ``postgresql`` writes its members to a private PostgreSQL cluster,
lane ``mariadb`` to a private MariaDB server (``tests/dbservers.py``). A client per lane POSTs
members at a steady rate for the whole run while a schedule of faults runs: worker SIGKILLs,
the Redis master SIGKILLed (a Sentinel failover; the dead node is then started again and
rejoins as a replica), the master restarted (SIGTERM, append-only file), PostgreSQL and
MariaDB restarted (down for a while), Redis full (``maxmemory`` reached) for a few seconds.

Afterwards every acknowledged member must have exactly one row: :class:`SoakReport` counts
requests, acknowledgements, refusals (503, by reason, with or without ``Retry-After``),
finished jobs, rows, lost and duplicated members, the time from each fault to the end of the
first job started after it in the lanes it hit, and which processes are alive (and which
``up`` had to restart).

The package follows the soak's parts: :mod:`.load` (the HTTP clients), :mod:`.lanes` (one
``redis-archive up`` each), :mod:`.faults` (what is done to them, and when), :mod:`.report`
(what was observed) and :mod:`.run` (all of it, once).
"""

from tests.soak.faults import SCHEDULE, SHORT_SCHEDULE
from tests.soak.report import SoakReport
from tests.soak.run import run_soak

__all__ = ["SCHEDULE", "SHORT_SCHEDULE", "SoakReport", "run_soak"]
