"""One lane: ``redis-archive up`` (producer, a FastWorker, a plain rq worker, the monitor) with a database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import select

from shared.connections import RideOutRetry, close_redis, get_redis
from shared.db import make_engine, member
from shared.settings import Settings
from shared.stack import procs
from shared.stack.sentinel import HaCluster
from tests.load import Client

ROOT = Path(__file__).resolve().parents[2]

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
        """SIGKILL one child of ``up``; returns its pid and whether it ran a job just before.

        ``group``: with the processes it forked (a FastWorker's scheduler, a plain rq worker's work
        horse), as a container's kill does; otherwise the process alone, as ``kill -9 <pid>``
        (a plain rq worker's horse then finishes its job by itself).
        """
        with self._lock:
            pid = self.pids[child]
        # Kill it while it holds a job, so that the kill abandons one (if it gets one soon).
        plain = child.startswith("rq-worker")
        busy = procs.wait_until(lambda: self._busy(pid, plain), 10, interval=0.002)
        if group:
            # RQ's work horse leaves the worker's process group (setpgrp): kill it by pid too.
            for child in _children(pid):
                os.kill(child, signal.SIGKILL)
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        return pid, busy

    def _busy(self, pid: int, plain: bool) -> bool:
        """Whether the worker process ``pid`` runs a job right now.

        A plain rq worker runs each job in a work horse, its only child while it does; a
        FastWorker registers the executions it holds (its claim and finish scripts keep that
        set exact; a plain rq worker's may lag behind its horse).
        """
        if plain:
            return bool(_children(pid))
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


def accepted_ids(lane: Lane) -> list[str]:
    """The job ids of the lane's requests answered 202."""
    assert lane.client is not None
    return [p.job_id for p in lane.client.posts if p.status == 202 and p.job_id]


def row_ids(url: str) -> set[str]:
    """The job ids of the member rows in the database at ``url`` (empty while it is down)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(member.c.job_id)).scalars())
    except Exception:
        return set()
    finally:
        engine.dispose()


def fetch_jobs(lane: Lane, ids: list[str]) -> list[Job | None]:
    """The lane's jobs ``ids`` (``None`` for a job gone), 500 per round trip."""
    assert lane.redis is not None
    out: list[Job | None] = []
    for i in range(0, len(ids), 500):
        out += Job.fetch_many(ids[i : i + 500], connection=lane.redis, serializer=JSONSerializer)
    return out
