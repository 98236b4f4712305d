"""The contenders: how each runs its worker and its producer, and what it does per job by default.

Each worker is the peer's own CLI with its documented defaults; only the concurrency is set (the
solo pool and RQ's ``SimpleWorker`` run one job at a time, so they sit out concurrency above 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.peers import envs
from bench.peers.stamps import STAMPS_ENV

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = ROOT / "bench" / "node" / "peers-bench.js"
#: The project's worker settings the bench sets itself (anything else set outside would skew it).
OUR_TUNING = ("WORKER_CONCURRENCY", "WORKER_BATCH", "HEARTBEAT_TIMEOUT", "WORKER_MASTER_TIMEOUT")


@dataclass(frozen=True)
class Peer:
    """One contender of the table."""

    key: str
    #: The row's label; ``{v}`` stands for the version.
    name: str
    #: "main" (the project's venv), a venv name of ``bench/peers/requirements``, or "node".
    env: str
    #: The module of ``bench.peers.queues`` (Python) or the library name (node).
    module: str
    #: The package whose pinned version labels the row.
    package: str
    #: The worker's command: a console script of the peer's venv, ``python`` or ``node`` first;
    #: ``{c}`` stands for the concurrency.
    command: tuple[str, ...]
    #: Runs one job at a time whatever it is given.
    single: bool = False
    #: What it writes per job, by default.
    stores: str = ""
    #: How an idle worker waits, and what it takes ahead.
    waits: str = ""

    @property
    def python(self) -> envs.PythonEnv:
        return envs.PythonEnv(self.env)

    def label(self) -> str:
        """The row's label, with the version the bench runs."""
        return self.name.format(v=self.version())

    def version(self) -> str:
        """The version the bench installs (or the project's, for ours and stock RQ)."""
        if self.env == "node":
            return envs.node_version(self.package)
        if self.env == "main":
            from importlib.metadata import version

            return version(self.package)
        return self.python.pins().get(self.package, "?")

    def worker(self, concurrency: int) -> list[str]:
        """The worker's command line for ``concurrency``."""
        program, *args = (arg.format(c=concurrency) for arg in self.command)
        if self.env == "node":
            return [program, *args]
        if program == "python":
            return [self.python.python, *args]
        return [self.python.script(program), *args]

    def ensure(self) -> bool:
        """Install the peer's environment if needed; returns whether it installed anything."""
        return envs.ensure_node() if self.env == "node" else self.python.ensure()

    def fill(self, kind: str, n: int) -> list[str]:
        """The command that enqueues jobs ``0..n-1`` with this peer's producer."""
        if self.env == "node":
            return ["node", str(NODE_SCRIPT), self.module, "fill", kind, str(n)]
        return [self.python.python, "-m", "bench.peers.drive", "fill", self.module, kind, str(n)]

    def trickle(self, kind: str, n: int, interval: float, warmup: int, out: Path) -> list[str]:
        """The command that warms the worker up, then enqueues one job every ``interval`` seconds."""
        if self.env == "node":
            ms = f"{interval * 1000:g}"
            return ["node", str(NODE_SCRIPT), self.module, "trickle", kind, str(n), ms, str(warmup), str(out)]
        argv = [self.python.python, "-m", "bench.peers.drive", "trickle", self.module, kind, str(n)]
        return [*argv, "--interval", str(interval), "--warmup", str(warmup), "--out", str(out)]

    def environ(self, url: str, stamps: Path, concurrency: int) -> dict[str, str]:
        """The environment of this peer's worker and producer."""
        env = {k: v for k, v in os.environ.items() if k not in OUR_TUNING}
        env.update(
            PYTHONPATH=str(ROOT),
            BENCH_REDIS_URL=url,
            BENCH_CONCURRENCY=str(concurrency),
            REDIS_URL=url,
            WORKER_CONCURRENCY=str(concurrency),
        )
        env[STAMPS_ENV] = str(stamps)
        return env


RQ_WORKER = ("python", "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json", "-w")
RQ_STORES = "job hash, execution, started/finished registries, result stream (kept 500 s; RQ's data model)"
CELERY = ("celery", "-A", "bench.peers.queues.celery_app", "worker", "--pool")
CELERY_STORES = "the message in a list, then in the unacked hash and its index until acked; no result backend"
NODE = ("node", str(NODE_SCRIPT))

PEERS: dict[str, Peer] = {
    peer.key: peer
    for peer in [
        Peer(
            "ours", "redis-archive FastWorker (RQ {v})", "main", "rq_jobs", "rq",
            (*RQ_WORKER, "consumer.worker.FastWorker", "bench"),
            stores=RQ_STORES + "; one script call claims a job, one records its success",
            waits=(
                "blocks on the queue (BLMOVE onto itself) with the claim queued behind it, one round"
                " trip; no prefetch (WORKER_BATCH=1)"
            ),
        ),
        Peer(
            "rq", "RQ {v} SimpleWorker", "main", "rq_jobs", "rq",
            (*RQ_WORKER, "rq.worker.SimpleWorker", "bench"),
            single=True,
            stores=RQ_STORES + "; about 18 round trips per job",
            waits="blocks on the queue (BLMOVE into its intermediate queue); no prefetch",
        ),
        Peer(
            "celery-solo", "Celery {v} --pool solo", "celery", "celery_app", "celery", (*CELERY, "solo"),
            single=True,
            stores=CELERY_STORES,
            waits="BRPOP (1 s timeout); prefetch multiplier 4 (4 messages)",
        ),
        Peer(
            "celery-threads", "Celery {v} --pool threads", "celery", "celery_app", "celery",
            (*CELERY, "threads", "--concurrency", "{c}"),
            stores=CELERY_STORES,
            waits="BRPOP (1 s timeout); prefetch multiplier 4 (4 messages per thread)",
        ),
        Peer(
            "dramatiq", "Dramatiq {v}", "dramatiq", "dramatiq_actors", "dramatiq",
            ("dramatiq", "bench.peers.queues.dramatiq_actors", "--processes", "1", "--threads", "{c}"),
            stores="the message in a hash and the queue list, deleted on ack; no results middleware",
            waits="fetches by Lua script, and when it gets nothing (queue empty, or its prefetch of 2 per "
            "thread full) sleeps 5 ms doubling (with jitter) up to 1 s",
        ),
        Peer(
            "huey", "huey {v}", "huey", "huey_tasks", "huey",
            ("huey_consumer", "bench.peers.queues.huey_tasks.huey", "--workers", "{c}"),
            stores="the pickled message in a list; a result only when a task returns one (these do not)",
            waits="BRPOP (1 s timeout), then sleeps 0.1 s growing 1.15x up to 10 s while empty; no prefetch",
        ),
        Peer(
            "saq", "SAQ {v}", "saq", "saq_settings", "saq",
            ("saq", "bench.peers.queues.saq_settings.settings", "--workers", "1"),
            stores="a JSON job key (kept with its result 600 s after the end), queued/active lists, an "
            "incomplete set, a status message published per update",
            waits="one BLMOVE (no timeout) per concurrent slot; no prefetch",
        ),
        Peer(
            "arq", "arq {v}", "arq", "arq_settings", "arq",
            ("arq", "bench.peers.queues.arq_settings.WorkerSettings"),
            stores="a pickled job key, in-progress and retry keys, the result kept 3,600 s (None too)",
            waits="polls its sorted set every 0.5 s (poll_delay), starting at most max_jobs jobs per poll",
        ),
        Peer(
            "bullmq", "BullMQ {v} (node)", "node", "bullmq", "bullmq", (*NODE, "bullmq", "work", "{c}"),
            stores="job hash, wait/active lists, completed set (kept: removeOnComplete off), events stream",
            waits="BZPOPMIN on a marker key (drainDelay 5 s); the completing script hands over the next job",
        ),
        Peer(
            "bull", "Bull {v} (node)", "node", "bull", "bull", (*NODE, "bull", "work", "{c}"),
            stores="job hash, wait/active lists, completed set (kept), a lock key while active",
            waits="BRPOPLPUSH; the completing script hands over the next job",
        ),
    ]
}  # fmt: skip

#: The peers ``make bench`` runs by default: stock RQ and Bull v4 are in the worker rows already
#: (``--peers all`` adds them here too).
DEFAULT = ["ours", "bullmq", "celery-solo", "celery-threads", "dramatiq", "huey", "saq", "arq"]
