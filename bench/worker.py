"""Processing throughput: trivial jobs through ``rq worker`` processes, ours against stock RQ.

Each worker runs as ``rq worker -c consumer.settings -S json -w CLASS --burst`` (default INFO
logging, to /dev/null) on a queue filled beforehand; the rate is the number of jobs over the
span from the first job's start to the last job's end, as the job hashes record them.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bench import bull
from bench.common import print_rows, row

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench"
STOCK_SIMPLE = "rq.worker.SimpleWorker"
STOCK_FORK = "rq.worker.Worker"
OURS = "consumer.worker.FastWorker"


def fill(conn: Redis, n: int) -> list[str]:
    """Enqueue ``n`` trivial jobs with RQ's own enqueue; returns their ids."""
    queue = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    ids = []
    for start in range(0, n, 1000):
        with conn.pipeline() as pipe:
            for i in range(start, min(n, start + 1000)):
                ids.append(queue.enqueue("bench.jobs.noop", i, pipeline=pipe).id)
            pipe.execute()
    return ids


def process(
    redis_url: str, worker_class: str, n: int, processes: int = 1, concurrency: int = 1, batch: int = 1
) -> float:
    """Jobs per second of ``processes`` burst workers of ``worker_class`` on ``n`` trivial jobs."""
    conn = Redis.from_url(redis_url)
    conn.flushall()
    ids = fill(conn, n)
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        WORKER_CONCURRENCY=str(concurrency),
        WORKER_BATCH=str(batch),
        LOG_LEVEL="INFO",
    )
    argv = [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json"]
    argv += ["-w", worker_class, "--burst", QUEUE]
    workers = [
        subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.wait(timeout=900)
    jobs = [job for job in Job.fetch_many(ids, connection=conn, serializer=JSONSerializer) if job is not None]
    done = [job for job in jobs if job.get_status(refresh=False).value == "finished"]
    if len(done) != n:
        raise RuntimeError(f"{worker_class}: only {len(done)} of {n} jobs finished")
    first = min(job.started_at for job in done if job.started_at)
    last = max(job.ended_at for job in done if job.ended_at)
    conn.close()
    return n / (last - first).total_seconds()


def measure(redis_url: str, scale: float = 1.0, rounds: int = 3) -> list[str]:
    """The processing rows of the benchmark table: medians of ``rounds`` interleaved runs."""
    n = int(10000 * scale)
    runs: dict[str, list[float]] = {}

    def record(key: str, rate: float) -> None:
        runs.setdefault(key, []).append(rate)

    with bull.bull() as modules:
        for _ in range(rounds):
            record("simple", process(redis_url, STOCK_SIMPLE, int(2000 * scale)))
            record("fork", process(redis_url, STOCK_FORK, int(200 * scale)))
            record("ours", process(redis_url, OURS, n))
            record("ours2", process(redis_url, OURS, n, processes=2))
            record("ours_b", process(redis_url, OURS, n, batch=50))
            record("ours2_b", process(redis_url, OURS, n, processes=2, batch=50))
            if modules is not None:
                Redis.from_url(redis_url).flushall()
                record("b1", bull.run(modules, "process", redis_url, n, 1))
                record("b50", bull.run(modules, "process", redis_url, n, 50))
    m = {key: statistics.median(values) for key, values in runs.items()}
    one = "trivial jobs, 1 worker process"
    simple = f"{m['simple']:,.0f}/s `SimpleWorker`"
    rows = [
        row(one, f"{m['ours']:,.0f}/s", simple, m["ours"] / m["simple"]),
        row(
            one,
            f"{m['ours']:,.0f}/s",
            f"{m['fork']:,.0f}/s default `Worker` (fork per job)",
            m["ours"] / m["fork"],
        ),
    ]
    if "b1" in m:
        rows.append(
            row(one, f"{m['ours']:,.0f}/s", f"{m['b1']:,.0f}/s Bull v4, concurrency 1", m["ours"] / m["b1"])
        )
    batch = f"{one}, `WORKER_BATCH=50`"
    rows.append(row(batch, f"{m['ours_b']:,.0f}/s", simple, m["ours_b"] / m["simple"]))
    if "b1" in m:
        bull1 = f"{m['b1']:,.0f}/s Bull v4, concurrency 1"
        rows.append(row(batch, f"{m['ours_b']:,.0f}/s", bull1, m["ours_b"] / m["b1"]))
    two = "trivial jobs, 2 worker processes"
    rows.append(row(two, f"{m['ours2']:,.0f}/s", f"{simple} (1 process)", m["ours2"] / m["simple"]))
    two_b = f"{two}, `WORKER_BATCH=50`"
    if "b50" in m:
        bull50 = f"{m['b50']:,.0f}/s Bull v4, 1 process, concurrency 50"
        rows.append(row(two_b, f"{m['ours2_b']:,.0f}/s", bull50, m["ours2_b"] / m["b50"]))
    else:
        rows.append(row(two_b, f"{m['ours2_b']:,.0f}/s", ""))
    return rows


def main() -> None:
    """Print the processing rows."""
    print_rows(measure, __doc__)


if __name__ == "__main__":
    main()
