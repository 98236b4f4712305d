"""The member queue on a local Redis Cluster (3 masters, 3 replicas): 1 namespace against 3.

For each layout it writes the jobs with the producer's writer (one namespace after another,
round robin), then runs one ``FastWorker`` process per namespace (``WORKER_BATCH``) until the
queue is empty, and reports per master: the jobs it served, the Redis commands it ran
(``INFO commandstats``, scripts' inner calls included) and the Redis CPU it spent
(``used_cpu_sys + used_cpu_user``, less what it spends idle over the same time) per job. The
per-master ceiling is one core over the CPU per job: the rate at which that master's Redis
would be saturated.

``flock /tmp/bench.lock python -m bench.cluster [--jobs N] [--batch B]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, today
from shared.cluster.clients import cluster_map, namespace_env, namespaces, slot_client
from shared.rqmodel.writes import JobWriter
from shared.settings import Settings
from shared.stack.cluster import LocalCluster
from shared.stack.local import worker_argv

ROOT = Path(__file__).resolve().parent.parent


def _node_figures(local: LocalCluster) -> dict[int, tuple[int, float]]:
    """Per master port: (commands run so far, Redis CPU seconds so far)."""
    figures = {}
    for node in local.nodes:
        client = local.client(node)
        try:
            if client.info("replication").get("role") != "master":
                continue
            calls = sum(int(v["calls"]) for v in client.info("commandstats").values())
            cpu = client.info("cpu")
            figures[node.port] = (calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]))
        finally:
            client.close()
    return figures


def idle_cpu(local: LocalCluster, seconds: float = 3.0) -> dict[int, float]:
    """Each master's Redis CPU per second while nothing runs."""
    before = _node_figures(local)
    time.sleep(seconds)
    after = _node_figures(local)
    return {port: max(0.0, (after[port][1] - before[port][1]) / seconds) for port in after}


def run(local: LocalCluster, spaces: int, jobs: int, batch: int, idle: dict[int, float]) -> dict[str, Any]:
    """One layout: ``spaces`` namespaces of queue member, ``jobs`` trivial jobs, one worker each."""
    env = {**os.environ, **local.env, "QUEUE_NAMESPACES": f"member={spaces}", "PYTHONPATH": str(ROOT)}
    env.update(WORKER_BATCH=str(batch), LOG_LEVEL="WARNING")
    settings = Settings.from_env(env)
    registry = slot_client(settings, "{archive}")
    registry.delete("{archive}:archive:namespaces")
    plan = namespaces(settings, registry)["member"]
    registry.close()
    clients = [slot_client(settings, ns.tag) for ns in plan]
    options = {"job_timeout": 60, "result_ttl": 600, "failure_ttl": 600, "description": "noop"}
    writers = [
        JobWriter(client, lambda _name: options, ns.keys, ns.keys.job_stats)
        for client, ns in zip(clients, plan, strict=True)
    ]
    for start in range(0, jobs, 1000):
        chunk = min(1000, jobs - start)
        writer = writers[(start // 1000) % len(writers)]
        writer.write("member", "bench.jobs.noop", "noop", [(i,) for i in range(chunk)])
    before = _node_figures(local)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            worker_argv(["member"], worker_class="consumer.worker.FastWorker", burst=True),
            env={**env, **namespace_env(ns.tag)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for ns in plan
    ]
    for proc in procs:
        proc.wait(timeout=900)
    elapsed = time.perf_counter() - started
    after = _node_figures(local)
    slots = cluster_map(settings)
    served: dict[int, int] = {}
    for client, ns in zip(clients, plan, strict=True):
        port = slots.owner(ns.slot)[1]
        served[port] = served.get(port, 0) + int(client.zcard(ns.keys.finished("member")))
        client.delete(ns.keys.finished("member"))
        client.close()
    total = sum(served.values())
    if total != jobs:
        raise RuntimeError(f"{total} of {jobs} jobs finished")
    masters = {}
    for port, (calls, cpu) in after.items():
        done = served.get(port, 0)
        # Less what the master spends when idle (its cron, replication pings) over the same time.
        d_calls = calls - before[port][0]
        d_cpu = max(0.0, cpu - before[port][1] - idle.get(port, 0.0) * elapsed)
        masters[port] = {
            "jobs": done,
            "calls_per_job": d_calls / done if done else None,
            "cpu_us_per_job": d_cpu / done * 1e6 if done else None,
            "cpu_s": d_cpu,
        }
    return {"spaces": spaces, "jobs": jobs, "seconds": elapsed, "rate": jobs / elapsed, "masters": masters}


def main() -> None:
    """Print both layouts, per master."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is needed on PATH")
    print(f"{today()}, {machine()}; {args.jobs:,} trivial jobs per run, WORKER_BATCH={args.batch}")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        local = LocalCluster(binary, Path(tmp))
        local.start()
        try:
            idle = idle_cpu(local)
            results: dict[int, list[dict[str, Any]]] = {1: [], 3: []}
            for _ in range(args.rounds):
                for spaces in (1, 3):
                    results[spaces].append(run(local, spaces, args.jobs, args.batch, idle))
        finally:
            local.stop()
    print()
    print(
        "| namespaces | jobs/s (median) | master | jobs | commands/job | Redis CPU µs/job "
        "| master ceiling jobs/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for spaces, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        best = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        for port, m in sorted(best["masters"].items()):
            if not m["jobs"]:
                print(f"| {spaces} | {rate:,.0f} | :{port} | 0 | | | |")
                continue
            ceiling = 1e6 / m["cpu_us_per_job"] if m["cpu_us_per_job"] else float("inf")
            print(
                f"| {spaces} | {rate:,.0f} | :{port} | {m['jobs']:,} | {m['calls_per_job']:.1f} "
                f"| {m['cpu_us_per_job']:.1f} | {ceiling:,.0f} |"
            )
    one = statistics.median(
        m["cpu_us_per_job"] for r in results[1] for m in r["masters"].values() if m["jobs"]
    )
    three = statistics.median(
        m["cpu_us_per_job"] for r in results[3] for m in r["masters"].values() if m["jobs"]
    )
    print()
    print(
        f"Redis CPU per job: {one:.1f} µs with 1 namespace, {three:.1f} µs with 3 (ratio {three / one:.2f})"
    )
    print(
        f"one master saturates at about {1e6 / three:,.0f} jobs/s; N masters carry about N times that "
        "while the workers keep up (here two cores run the workers and all six nodes)"
    )


if __name__ == "__main__":
    main()
