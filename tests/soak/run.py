"""Running the soak once: start everything, load it, run the faults, wait, report, stop everything."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from shared.db import init_db, make_engine
from shared.stack import procs
from shared.stack.sentinel import HaCluster
from tests.dbservers import PrivateMariaDB, PrivatePostgres
from tests.load import Client
from tests.soak.faults import ACTIONS, HITS, SCHEDULE, Fault, Topology, schedule_times
from tests.soak.lanes import Lane
from tests.soak.report import SoakReport, first_finished_after, lane_result, settled

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def run_soak(
    directory: Path,
    *,
    seconds: float = 300.0,
    rate: float = 20.0,
    schedule: tuple[str, ...] = SCHEDULE,
    db_outage: float = 10.0,
    full_seconds: float = 5.0,
    drain_timeout: float = 300.0,
    extra_env: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> SoakReport:
    """Run the soak in ``directory`` and return what it observed."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = HaCluster(REDIS_SERVER, directory / "redis", down_after_ms=1000, appendonly=True)
    # In directories of their own under /tmp: initdb runs as the postgres user, which cannot
    # enter a root-only test directory.
    postgres = PrivatePostgres()
    mariadb = PrivateMariaDB()
    lanes: dict[str, Lane] = {}
    try:
        say("starting Redis (master, 2 replicas, 3 Sentinels), PostgreSQL, MariaDB")
        cluster.start()
        postgres.init()
        postgres.start()
        mariadb.init()
        for url in (postgres.url, mariadb.url):
            engine = make_engine(url)
            init_db(engine)  # once, before the processes race to create the table
            engine.dispose()
        lanes = {
            "postgresql": Lane("postgresql", 0, postgres.url, directory),
            "mariadb": Lane("mariadb", 1, mariadb.url, directory),
        }
        for lane in lanes.values():
            say(f"starting lane {lane.name}: redis-archive up (producer, FastWorker, rq worker, monitor)")
            lane.start(cluster, extra_env or {})
        top = Topology(cluster, postgres, mariadb, lanes, db_outage, full_seconds)
        start = time.monotonic()
        for lane in lanes.values():
            lane.client = Client(lane.port, rate, lane=lane.name)
            lane.client.start()
        faults: list[Fault] = []
        for kind, at in zip(schedule, schedule_times(schedule, seconds), strict=True):
            time.sleep(max(0.0, start + at - time.monotonic()))
            fault = Fault(kind, HITS.get(kind, tuple(lanes)), at=time.monotonic() - start)
            say(f"{fault.at:6.1f}s  {kind}")
            fault.began = time.monotonic()
            ACTIONS[kind](top, fault)
            fault.ended = fault.ended or time.monotonic()
            fault.at = fault.began - start
            say(f"         {fault.detail} ({time.monotonic() - fault.began:.1f}s)")
            faults.append(fault)
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        for lane in lanes.values():
            assert lane.client is not None
            lane.client.stopping.set()
        for lane in lanes.values():
            assert lane.client is not None
            lane.client.join(120)
        say("load stopped; waiting until every acknowledged member is written")
        drain_started = time.monotonic()

        def drained() -> bool:
            return all(settled(lane) for lane in lanes.values())

        procs.wait_until(drained, drain_timeout, interval=2.0)
        drain_seconds = time.monotonic() - drain_started
        results = [lane_result(lane) for lane in lanes.values()]
        for fault in faults:
            for name in fault.lanes:
                fault.recovery[name] = first_finished_after(lanes[name], start + fault.at, fault.ended)
        return SoakReport(seconds, rate, faults, results, drain_seconds, directory)
    finally:
        for lane in lanes.values():
            lane.stop()
        cluster.stop()
        postgres.remove()
        mariadb.remove()
