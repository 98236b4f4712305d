"""The mixed-fault soak shared by ``bench/soak.py`` and ``tests/system/test_soak.py``.

Real processes only. Redis is a master, two replicas and three Sentinels
(``shared.stack.sentinel``, append-only files on, ``down-after-milliseconds`` 1000), with
durable enqueue (``ENQUEUE_MIN_REPLICAS=1``). Two lanes share it, each a ``redis-archive up``
on its own Redis database: the producer, one ``FastWorker``, one plain ``rq worker -c
consumer.settings -S json`` (RQ's stock forking worker, no ``--with-scheduler``) and the
recovery monitor. Lane ``postgresql`` writes its members to a private PostgreSQL cluster,
lane ``mariadb`` to a private MariaDB server (``tests/dbservers.py``). A client per lane POSTs
members at a steady rate for the whole run while a schedule of faults runs: worker SIGKILLs,
the Redis master SIGKILLed (a Sentinel failover; the dead node is then started again and
rejoins as a replica), the master restarted (SIGTERM, append-only file), PostgreSQL and
MariaDB restarted (down for a while), Redis full (``maxmemory`` reached) for a few seconds.

Afterwards every acknowledged member must have exactly one row: :class:`SoakReport` counts
requests, acknowledgements, refusals (503, by reason, with or without ``Retry-After``),
finished jobs, rows, lost and duplicated members, the time from each fault to the first job
finished after it in the lanes it hit, and which processes are alive (and which ``up`` had
to restart).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from shared.connections import RideOutRetry, close_redis, get_redis
from shared.db import init_db, make_engine, member
from shared.settings import Settings
from shared.stack import procs
from shared.stack.sentinel import HaCluster
from tests.dbservers import PrivateMariaDB, PrivatePostgres

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
ROOT = Path(__file__).resolve().parent.parent


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Post:
    """One request: when it was sent and answered, and how."""

    sent: float
    done: float
    status: int
    job_id: str | None = None
    #: The error body's ``code`` (``unavailable``, ``out_of_memory``), or what went wrong.
    reason: str | None = None
    retry_after: str | None = None


class Client(threading.Thread):
    """POSTs member jobs to one producer at ``rate`` per second until stopped."""

    def __init__(self, lane: str, port: int, rate: float) -> None:
        super().__init__(daemon=True, name=f"client-{lane}")
        self.lane = lane
        self.port = port
        self.interval = 1.0 / rate
        self.posts: list[Post] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            n += 1
            body = json.dumps({"name": f"{self.lane} {n}", "age": n % 150, "email": f"m{n}@example.com"})
            post = Post(time.monotonic(), 0.0, 0)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("POST", "/queue/members", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                post.status = response.status
                post.retry_after = response.getheader("Retry-After")
                data = json.loads(payload) if payload else {}
                if post.status == 202:
                    post.job_id = data["jobId"]
                else:
                    error = data.get("error", {})
                    post.reason = f"{error.get('code')}: {error.get('message')}"
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                post.reason = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            post.done = time.monotonic()
            self.posts.append(post)
            next_at = max(next_at + self.interval, time.monotonic())
            self.stopping.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()


# -- one lane: `redis-archive up` with a database ---------------------------------------------

_PID_LINE = re.compile(r"^(\S+)\s+pid (\d+): ")
_RESTARTED = re.compile(r"^(\S+) restarted as pid (\d+)")
_EXITED = re.compile(r"^(\S+) exited with (-?\d+); restarting")


@dataclass
class Lane:
    """``redis-archive up`` on Redis database ``db``, writing members to ``database_url``."""

    name: str
    db: int
    database_url: str
    directory: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: The current pid of each child ``up`` supervises (``worker-1``, ``rq-worker-1``, ``monitor``).
    pids: dict[str, int] = field(default_factory=dict)
    #: Every "exited with ...; restarting" line ``up`` printed: (child, exit status).
    restarts: list[tuple[str, int]] = field(default_factory=list)
    client: Client | None = None
    redis: Redis | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def env(self, cluster: HaCluster, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DB_", "ENQUEUE_"))}
        env.update(cluster.env())
        env.update(
            # Sentinel decides host and port; the URL still decides the database.
            REDIS_URL=f"redis://127.0.0.1:6379/{self.db}",
            DATABASE_URL=self.database_url,
            ENQUEUE_MIN_REPLICAS="1",
            ENQUEUE_RETRY_SECONDS="10",
            WORKER_MASTER_TIMEOUT="60",
            LOG_LEVEL="INFO",
            DASHBOARD_PASSWORD="soak",
            MEMORY_SAMPLE_SECONDS="0",
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start(self, cluster: HaCluster, extra: dict[str, str]) -> None:
        """Start ``up`` (producer, a FastWorker, a plain rq worker, the monitor) and wait for it."""
        self.port = procs.free_port()
        env = self.env(cluster, extra)
        # The harness's own client waits out the faults it causes.
        self.redis = get_redis(Settings.from_env(env), retry=RideOutRetry(120, "the soak's patience"))
        argv = [
            sys.executable, "-m", "shared.cli", "up", "--port", str(self.port),
            "--workers", "1", "--plain-workers", "1", "--data-dir", str(self.directory / "var"),
        ]  # fmt: skip
        self.proc = procs.spawn(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(ROOT)
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"up-{self.name}")
        self._reader.start()
        ready = procs.wait_until(
            lambda: {"worker-1", "rq-worker-1", "monitor"} <= set(self.pids) and self.workers() >= 2, 90, 0.2
        )
        if not ready:
            raise RuntimeError(f"lane {self.name} did not start; see {self.log}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log, "wb") as out:
            try:
                self._copy(self.proc.stdout, out)
            except (OSError, ValueError):
                pass  # the pipe was closed at the end of the run

    def _copy(self, stream: Any, out: Any) -> None:
        for raw in stream:
            out.write(raw)
            out.flush()
            line = raw.decode(errors="replace").rstrip()
            for pattern in (_PID_LINE, _RESTARTED):
                match = pattern.match(line)
                if match:
                    with self._lock:
                        self.pids[match.group(1)] = int(match.group(2))
            exited = _EXITED.match(line)
            if exited:
                with self._lock:
                    self.restarts.append((exited.group(1), int(exited.group(2))))

    def workers(self) -> int:
        """Workers registered in this lane's Redis database."""
        assert self.redis is not None
        try:
            return int(self.redis.scard("rq:workers"))
        except Exception:
            return 0

    def kill(self, child: str, group: bool) -> tuple[int, bool]:
        """SIGKILL one child of ``up``; returns its pid and whether it held a job.

        ``group``: with the processes it forked (a FastWorker's scheduler, a stock worker's work
        horse), as a container's kill does; otherwise the process alone, as ``kill -9 <pid>``
        (a stock worker's horse then finishes its job by itself).
        """
        with self._lock:
            pid = self.pids[child]
        # Kill it while it holds a job, so that the kill abandons one (if it gets one soon).
        busy = procs.wait_until(lambda: self._busy(pid), 10, interval=0.002)
        if group:
            # RQ's work horse leaves the worker's process group (setpgrp): kill it by pid too.
            for child in _children(pid):
                os.kill(child, signal.SIGKILL)
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        return pid, busy

    def _busy(self, pid: int) -> bool:
        """Whether the worker process ``pid`` has a job (an execution registered) right now."""
        assert self.redis is not None
        for key in self.redis.smembers("rq:workers"):
            if self.redis.hget(key, "pid") == str(pid).encode():
                return bool(self.redis.scard(key.decode() + ":executions"))
        return False

    def alive(self) -> dict[str, bool]:
        """Whether ``up`` and each child it supervises run now."""
        with self._lock:
            pids = dict(self.pids)
        state = {"up": self.proc is not None and self.proc.poll() is None}
        for name, pid in pids.items():
            state[name] = _running(pid)
        return state

    def stop(self) -> None:
        if self.client is not None:
            self.client.stopping.set()
        if self.proc is not None:
            procs.stop(self.proc, timeout=60)
        if self._reader is not None:
            # A process orphaned by a kill may still hold the pipe: do not wait for its end.
            self._reader.join(10)
        reading = self._reader is not None and self._reader.is_alive()
        if self.proc is not None and self.proc.stdout is not None and not reading:
            self.proc.stdout.close()
        if self.redis is not None:
            close_redis(self.redis)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# -- the faults -------------------------------------------------------------------------------


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
    #: :func:`_first_finished_after`), per lane it hit; ``None``: no job finished after it.
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
        holding = "holding a job" if busy else "between jobs"
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

SHORT_SCHEDULE = (
    "worker SIGKILL (FastWorker, postgresql)",
    "Redis master SIGKILL (failover)",
    "PostgreSQL restart",
    "worker SIGKILL (rq worker, mariadb)",
    "Redis restart",
    "MariaDB restart",
    "Redis full (maxmemory)",
)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class LaneResult:
    """What one lane observed."""

    name: str
    posts: list[Post]
    accepted: list[str]
    finished: int
    rows: int
    distinct_rows: int
    lost: list[str]
    #: Rows whose job id was never acknowledged (a 503 after a write that landed).
    unacknowledged_rows: int
    failed_jobs: list[str]
    alive: dict[str, bool]
    restarts: list[tuple[str, int]]
    #: Jobs whose worker died under them and that were retried (the failure callback's lines).
    abandoned: int = 0


@dataclass
class SoakReport:
    """The printed result of a soak."""

    seconds: float
    rate: float
    faults: list[Fault]
    lanes: list[LaneResult]
    drain_seconds: float
    directory: Path

    @property
    def posts(self) -> list[Post]:
        return [p for lane in self.lanes for p in lane.posts]

    @property
    def refusals(self) -> Counter[str]:
        """503s by reason (numbers in the message folded, so that one reason is one line)."""
        return Counter(re.sub(r"\d+", "N", p.reason or "?") for p in self.posts if p.status == 503)

    @property
    def refused_without_retry_after(self) -> int:
        return sum(1 for p in self.posts if p.status == 503 and not p.retry_after)

    @property
    def other(self) -> Counter[str]:
        """Answers that are neither 202 nor 503 (500s, dropped connections), by status and reason."""
        return Counter(f"{p.status} {p.reason}" for p in self.posts if p.status not in (202, 503))

    @property
    def lost(self) -> int:
        return sum(len(lane.lost) for lane in self.lanes)

    @property
    def duplicated(self) -> int:
        return sum(lane.rows - lane.distinct_rows for lane in self.lanes)

    @property
    def dead(self) -> list[str]:
        return [f"{lane.name}/{name}" for lane in self.lanes for name, up in lane.alive.items() if not up]

    @property
    def max_recovery(self) -> float | None:
        values = [v for fault in self.faults for v in fault.recovery.values() if v is not None]
        return max(values) if values else None

    @property
    def never_recovered(self) -> list[str]:
        return [f"{f.kind} ({lane})" for f in self.faults for lane, v in f.recovery.items() if v is None]

    def ok(self) -> bool:
        """What the soak must show: nothing lost or doubled, everyone alive, every refusal answerable."""
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.dead
            and self.refused_without_retry_after == 0
            and not self.other
            and not self.never_recovered
            and all(not lane.failed_jobs for lane in self.lanes)
        )

    def render(self) -> str:
        posts = self.posts
        accepted = sum(len(lane.accepted) for lane in self.lanes)
        lines = [
            f"soak: {self.seconds:.0f}s of load at {self.rate:g} POSTs/s per lane, {len(self.faults)} faults,"
            f" then {self.drain_seconds:.0f}s until every acknowledged job had ended ({self.directory})",
            "",
            "faults (seconds from the start of the load; the fault's length; recovery = from the fault's",
            "start to the end of the first job that started after it began and ended after it ended):",
        ]
        for fault in self.faults:
            recovery = ", ".join(
                f"{lane} {'never' if v is None else f'{v:.1f}s'}" for lane, v in fault.recovery.items()
            )
            length = fault.ended - (fault.began or fault.ended)
            lines.append(
                f"  {fault.at:6.1f}s  {fault.kind} ({length:.1f}s): {fault.detail}; recovery {recovery}"
            )
        lines += [
            "",
            f"requests sent            {len(posts)}",
            f"accepted (202)           {accepted}",
            f"refused (503)            {sum(self.refusals.values())}"
            f" ({self.refused_without_retry_after} without Retry-After)",
        ]
        for reason, count in self.refusals.most_common():
            lines.append(f"    {count:6d}  {reason}")
        lines.append(f"other answers            {sum(self.other.values())}")
        for reason, count in self.other.most_common():
            lines.append(f"    {count:6d}  {reason}")
        lines += [
            f"jobs finished            {sum(lane.finished for lane in self.lanes)}",
            f"jobs failed              {sum(len(lane.failed_jobs) for lane in self.lanes)}",
            f"jobs abandoned by a killed worker, retried  {sum(lane.abandoned for lane in self.lanes)}",
            f"rows written             {sum(lane.rows for lane in self.lanes)}"
            f" ({sum(lane.unacknowledged_rows for lane in self.lanes)} for requests answered 503)",
            f"lost (202, no row)       {self.lost}",
            f"duplicated rows          {self.duplicated}",
            "max fault -> first finished job: "
            + (f"{self.max_recovery:.1f}s" if self.max_recovery is not None else "n/a"),
        ]
        for lane in self.lanes:
            states = ", ".join(
                f"{name} {'alive' if up else 'DEAD'}" for name, up in sorted(lane.alive.items())
            )
            restarted = Counter(name for name, _ in lane.restarts)
            said = ", ".join(f"{name} x{n}" for name, n in sorted(restarted.items())) or "none"
            lines.append(
                f"lane {lane.name}: {len(lane.accepted)} accepted, {lane.rows} rows; processes: {states}; "
                f"restarted by redis-archive up (it said so): {said}"
            )
        lines.append("OK" if self.ok() else "FAILED")
        return "\n".join(lines)


def schedule_times(kinds: tuple[str, ...], seconds: float) -> list[float]:
    """When each fault starts: spread evenly over the middle of the run."""
    first, last = 0.08 * seconds, 0.85 * seconds
    if len(kinds) == 1:
        return [first]
    step = (last - first) / (len(kinds) - 1)
    return [first + i * step for i in range(len(kinds))]


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
            lane.client = Client(lane.name, lane.port, rate)
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
            return all(_settled(lane) for lane in lanes.values())

        procs.wait_until(drained, drain_timeout, interval=2.0)
        drain_seconds = time.monotonic() - drain_started
        results = [_lane_result(lane) for lane in lanes.values()]
        for fault in faults:
            for name in fault.lanes:
                fault.recovery[name] = _first_finished_after(lanes[name], start + fault.at, fault.ended)
        return SoakReport(seconds, rate, faults, results, drain_seconds, directory)
    finally:
        for lane in lanes.values():
            lane.stop()
        cluster.stop()
        postgres.remove()
        mariadb.remove()


def _accepted(lane: Lane) -> list[str]:
    assert lane.client is not None
    return [p.job_id for p in lane.client.posts if p.status == 202 and p.job_id]


def _row_ids(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(member.c.job_id)).scalars())
    except Exception:
        return set()
    finally:
        engine.dispose()


def _settled(lane: Lane) -> bool:
    """Every acknowledged job ended (finished or failed) and every finished one has its row."""
    accepted = _accepted(lane)
    try:
        jobs = _jobs(lane, accepted)
    except Exception:
        return False
    ended = (JobStatus.FINISHED, JobStatus.FAILED)
    if any(job is not None and job.get_status(refresh=False) not in ended for job in jobs):
        return False
    finished = {
        job.id for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED
    }
    return finished <= _row_ids(lane.database_url)


def _jobs(lane: Lane, ids: list[str]) -> list[Job | None]:
    assert lane.redis is not None
    out: list[Job | None] = []
    for i in range(0, len(ids), 500):
        out += Job.fetch_many(ids[i : i + 500], connection=lane.redis, serializer=JSONSerializer)
    return out


def _lane_result(lane: Lane) -> LaneResult:
    assert lane.client is not None
    accepted = _accepted(lane)
    engine = make_engine(lane.database_url)
    try:
        with engine.connect() as conn:
            ids = list(conn.execute(select(member.c.job_id)).scalars())
            count = conn.execute(select(func.count()).select_from(member)).scalar_one()
    finally:
        engine.dispose()
    wanted = set(accepted)
    ours = [job_id for job_id in ids if job_id in wanted]
    jobs = _jobs(lane, accepted)
    finished = sum(
        1 for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED
    )
    failed = [job.id for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FAILED]
    return LaneResult(
        name=lane.name,
        posts=list(lane.client.posts),
        accepted=accepted,
        finished=finished,
        rows=len(ours),
        distinct_rows=len(set(ours)),
        lost=sorted(wanted - set(ours)),
        unacknowledged_rows=int(count) - len(ours),
        failed_jobs=failed,
        alive=lane.alive(),
        restarts=list(lane.restarts),
        abandoned=_abandoned(lane.log),
    )


def _abandoned(log: Path) -> int:
    """Jobs a dead worker left behind and recovery retried, from the failure callback's lines."""
    pattern = re.compile(r"job failed id=(\S+) .*AbandonedJobError")
    with open(log, errors="replace") as lines:
        return len({m.group(1) for line in lines if (m := pattern.search(line))})


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _first_finished_after(lane: Lane, began: float, ended: float) -> float | None:
    """Seconds from ``began`` (monotonic) to the end of ``lane``'s first job after the fault.

    That job started after the fault began and finished after it ended: a job already running
    when the fault began, or one that ended in the moment before the fault took hold, may
    finish without the system having recovered.
    """
    offset = time.time() - time.monotonic()
    start = datetime.fromtimestamp(began + offset, UTC)
    end = datetime.fromtimestamp(ended + offset, UTC)
    ends = [
        _aware(job.ended_at)
        for job in _jobs(lane, _accepted(lane))
        if job is not None
        and job.started_at is not None
        and job.ended_at is not None
        and _aware(job.started_at) >= start
        and _aware(job.ended_at) >= end
        and job.get_status(refresh=False) == JobStatus.FINISHED
    ]
    if not ends:
        return None
    return (min(ends) - start).total_seconds()
