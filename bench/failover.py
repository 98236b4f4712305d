"""Failover: kill the master mid-run, with durable enqueue and without; and what durability costs.

``flock /tmp/bench.lock python -m bench.failover [--runs 3]``

Each run is the failover test's scenario (``tests/failover_scenario.py``): a master, two
replicas and three Sentinels (``down-after-milliseconds`` 1000), the producer under gunicorn,
two workers of the default class, a client POSTing member jobs at a steady rate, the master
SIGKILLed mid-run. Printed per run: time from the kill to the first successful enqueue of a
request sent after it, jobs acknowledged (202), lost (acknowledged, then neither a member row
nor a job on the new master), run twice (put back after the failover, or two results; the job
is idempotent, so still one row), refused (503). Then the price of durable enqueue on a
healthy topology: in-process enqueue latency with ``ENQUEUE_MIN_REPLICAS`` 0 and 1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, today  # noqa: E402
from producer import create_app  # noqa: E402
from producer.enqueue import enqueue  # noqa: E402
from producer.state import EXTENSION  # noqa: E402
from shared.connections import close_redis  # noqa: E402
from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stack.sentinel import HaCluster  # noqa: E402
from tests.failover_scenario import REDIS_SERVER, FailoverResult, run_failover  # noqa: E402


def _row(mode: str, run: int, r: FailoverResult) -> str:
    resume = f"{r.resume_seconds:.2f}" if r.resume_seconds is not None else "never"
    return (
        f"| {mode} | {run} | {resume} | {len(r.acknowledged)} | {len(r.lost)} | "
        f"{len(r.processed_twice)} | {r.refused} | {r.failovers} |"
    )


def failover_runs(runs: int, rate: float) -> None:
    """Print one table row per run and mode."""
    print(
        "| mode | run | kill to first enqueue (s) | acknowledged | lost | run twice | refused (503) "
        "| failovers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[FailoverResult]] = {"durable": [], "async": []}
    for run in range(1, runs + 1):
        for mode in ("durable", "async"):
            directory = Path(tempfile.mkdtemp(prefix=f"bench-failover-{mode}-"))
            try:
                result = run_failover(directory, durable=mode == "durable", rate=rate)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            totals[mode].append(result)
            print(_row(mode, run, result), flush=True)
    for mode, results in totals.items():
        resumes = [r.resume_seconds for r in results if r.resume_seconds is not None]
        acked = sum(len(r.acknowledged) for r in results)
        lost = sum(len(r.lost) for r in results)
        twice = sum(len(r.processed_twice) for r in results)
        resume = f"{statistics.median(resumes):.2f}s" if resumes else "never"
        print(f"{mode}: acknowledged {acked}, lost {lost}, run twice {twice}, kill->enqueue median {resume}")


def _latencies(settings: Settings, n: int) -> list[float]:
    app = create_app({"TESTING": True, **asdict(settings)})
    state = app.extensions[EXTENSION]
    out = []
    try:
        with app.app_context():
            for i in range(n):
                started = time.perf_counter()
                payload = {"name": f"m{i}", "age": 1}
                enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
                out.append((time.perf_counter() - started) * 1000)
    finally:
        state.engine.dispose()
        close_redis(state.redis)
    return out


def durability_cost(n: int) -> None:
    """In-process enqueue latency through Sentinel, without and with ``WAIT`` for one replica."""
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        cluster = HaCluster(REDIS_SERVER, Path(tmp) / "redis")
        cluster.start()
        try:
            base = Settings.from_env({**cluster.env(), "DATABASE_URL": f"sqlite:///{tmp}/bench.db"})
            print()
            print(f"enqueue latency, in process, {n} jobs each, master + 2 replicas on loopback:")
            print("| ENQUEUE_MIN_REPLICAS | mean ms | p50 ms | p99 ms | jobs/s, one client |")
            print("|---|---|---|---|---|")
            for replicas in (0, 1, 0, 1):
                lat = sorted(_latencies(base.with_overrides(enqueue_min_replicas=replicas), n))
                mean = statistics.fmean(lat)
                p99 = lat[int(len(lat) * 0.99) - 1]
                p50 = lat[len(lat) // 2]
                print(f"| {replicas} | {mean:.3f} | {p50:.3f} | {p99:.3f} | {1000 / mean:,.0f} |")
        finally:
            cluster.stop()


def main() -> None:
    """Run the failover scenario ``--runs`` times per mode, then the durability cost."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="client POSTs per second")
    parser.add_argument("--latency-jobs", type=int, default=2000)
    args = parser.parse_args()
    print(f"{today()}, {machine()}, redis-server {REDIS_SERVER}")
    print()
    failover_runs(args.runs, args.rate)
    durability_cost(args.latency_jobs)


if __name__ == "__main__":
    main()
