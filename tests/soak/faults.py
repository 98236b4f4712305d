"""The faults: what the soak does to Redis, the databases and the workers, and when."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.stack.sentinel import HaCluster
from tests.dbservers import PrivateMariaDB, PrivatePostgres
from tests.soak.lanes import Lane


@dataclass
class Fault:
    """One fault of the schedule: its kind, the lanes it hits, when it began and ended."""

    kind: str
    lanes: tuple[str, ...]
    #: Seconds from the start of the load.
    at: float = 0.0
    #: Monotonic times: when the fault began, and when what it took away was back.
    began: float = 0.0
    ended: float = 0.0
    detail: str = ""
    #: Seconds from the fault's start to the end of the first job after it (see
    #: :func:`tests.soak.report.first_finished_after`), per lane it hit; ``None``: no job finished after it.
    recovery: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Topology:
    """Everything the faults act on."""

    cluster: HaCluster
    postgres: PrivatePostgres
    mariadb: PrivateMariaDB
    lanes: dict[str, Lane]
    db_outage: float
    full_seconds: float


def worker_kill(child: str, lane: str, group: bool) -> Callable[[Topology, Fault], None]:
    def run(top: Topology, fault: Fault) -> None:
        pid, busy = top.lanes[lane].kill(child, group)
        what = "its process group" if group else "the process alone"
        # Checked a moment before the kill: the job may have ended in between.
        holding = "busy just before" if busy else "idle just before"
        fault.detail = f"SIGKILL {lane}/{child} (pid {pid}, {what}, {holding})"

    return run


def master_kill(top: Topology, fault: Fault) -> None:
    old = top.cluster.kill_master()
    new = top.cluster.wait_for_new_master(old, timeout=60)
    fault.detail = f"SIGKILL master {old.name}; Sentinels promoted {new.name}"
    fault.ended = time.monotonic()
    # Bring the dead node back, as a replica of the new master (as the Sentinels would make it).
    top.cluster.start_node(old, replica_of=new)


def redis_restart(top: Topology, fault: Fault) -> None:
    node = top.cluster.master()
    top.cluster.restart(node, signal.SIGTERM)
    fault.detail = f"restart of master {node.name} (SIGTERM, append-only file)"


def postgres_restart(top: Topology, fault: Fault) -> None:
    top.postgres.stop("fast")
    time.sleep(top.db_outage)  # the length of the outage
    top.postgres.start()
    fault.detail = f"PostgreSQL down {top.db_outage:g}s (pg_ctl stop -m fast, start)"


def mariadb_restart(top: Topology, fault: Fault) -> None:
    top.mariadb.stop(signal.SIGTERM)
    time.sleep(top.db_outage)
    top.mariadb.start()
    fault.detail = f"MariaDB down {top.db_outage:g}s (SIGTERM, start)"


def redis_full(top: Topology, fault: Fault) -> None:
    node = top.cluster.master()
    with top.cluster.client(node) as client:
        client.config_set("maxmemory", "1")
        time.sleep(top.full_seconds)  # the length of the outage
        client.config_set("maxmemory", "0")
    fault.detail = f"maxmemory reached on {node.name} for {top.full_seconds:g}s (noeviction: writes refused)"


ACTIONS: dict[str, Callable[[Topology, Fault], None]] = {
    "worker SIGKILL (FastWorker, postgresql)": worker_kill("worker-1", "postgresql", group=True),
    # kill -9 of the worker alone: its work horse finishes the job it holds.
    "worker SIGKILL (rq worker, mariadb)": worker_kill("rq-worker-1", "mariadb", group=False),
    "worker SIGKILL (FastWorker, mariadb)": worker_kill("worker-1", "mariadb", group=True),
    # With its horse: the job is abandoned; the monitor's registry clean-up retries it (~90 s).
    "worker SIGKILL (rq worker, postgresql)": worker_kill("rq-worker-1", "postgresql", group=True),
    "Redis master SIGKILL (failover)": master_kill,
    "Redis restart": redis_restart,
    "PostgreSQL restart": postgres_restart,
    "MariaDB restart": mariadb_restart,
    "Redis full (maxmemory)": redis_full,
}

#: The lanes each fault hits.
HITS = {
    "worker SIGKILL (FastWorker, postgresql)": ("postgresql",),
    "worker SIGKILL (rq worker, mariadb)": ("mariadb",),
    "worker SIGKILL (FastWorker, mariadb)": ("mariadb",),
    "worker SIGKILL (rq worker, postgresql)": ("postgresql",),
    "PostgreSQL restart": ("postgresql",),
    "MariaDB restart": ("mariadb",),
}

#: The order of the faults; a run of ``n`` seconds spreads them evenly between 8% and 85% of it.
SCHEDULE = (
    "worker SIGKILL (FastWorker, postgresql)",
    "Redis master SIGKILL (failover)",
    "PostgreSQL restart",
    "worker SIGKILL (rq worker, mariadb)",
    "Redis restart",
    "MariaDB restart",
    "Redis full (maxmemory)",
    "worker SIGKILL (FastWorker, mariadb)",
    "Redis master SIGKILL (failover)",
    "worker SIGKILL (rq worker, postgresql)",
)

#: The first seven: one fault of each kind.
SHORT_SCHEDULE = SCHEDULE[:7]


def schedule_times(kinds: tuple[str, ...], seconds: float) -> list[float]:
    """When each fault starts: spread evenly over the middle of the run."""
    first, last = 0.08 * seconds, 0.85 * seconds
    if len(kinds) == 1:
        return [first]
    step = (last - first) / (len(kinds) - 1)
    return [first + i * step for i in range(len(kinds))]
