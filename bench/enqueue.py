"""Enqueue throughput in process: the producer's write path against RQ's ``Queue.enqueue``.

Both write the same member job (same callbacks, retry, TTLs, meta) to the same Redis.
"""

from __future__ import annotations

import logging
import statistics

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine

from bench import bull
from bench.common import Stopwatch, print_rows, row
from producer.enqueue import enqueue, enqueue_many, job_options
from producer.state import ArchiveState
from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE
from shared.settings import Settings


def payload(i: int) -> dict[str, object]:
    """A member payload."""
    return {"name": f"member {i}", "age": i % 150, "email": None}


def measure(redis_url: str, scale: float = 1.0, rounds: int = 3) -> list[str]:
    """The enqueue rows of the benchmark table: medians of ``rounds`` interleaved runs."""
    n = int(5000 * scale)
    bulk_n = int(50000 * scale)
    conn = Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url)
    engine = create_engine("sqlite://")
    state = ArchiveState(settings=settings, redis=conn, cache_redis=conn, engine=engine)
    queue = Queue(MEMBER_QUEUE, connection=conn, serializer=JSONSerializer)
    options = job_options(settings, CREATE_MEMBER_JOB_NAME)

    def timed(fn: object) -> float:
        conn.flushall()
        with Stopwatch() as sw:
            fn()  # type: ignore[operator]
        return sw.seconds

    def stock_one() -> None:
        for i in range(n):
            queue.enqueue(CREATE_MEMBER_JOB, payload(i), **options)

    def ours_one() -> None:
        for i in range(n):
            enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload(i))

    def stock_bulk() -> None:
        for start in range(0, bulk_n, 1000):
            queue.enqueue_many(
                [
                    Queue.prepare_data(CREATE_MEMBER_JOB, (payload(i),), **_prepare_options(options))
                    for i in range(start, min(bulk_n, start + 1000))
                ]
            )

    def ours_bulk() -> None:
        for start in range(0, bulk_n, 1000):
            batch = [(payload(i),) for i in range(start, min(bulk_n, start + 1000))]
            enqueue_many(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, batch)

    logging.getLogger("producer").setLevel(logging.WARNING)
    runs: dict[str, list[float]] = {}
    with bull.bull() as modules:
        # Interleaved rounds, medians: the machine's load changes from minute to minute.
        for _ in range(rounds):
            runs.setdefault("stock", []).append(n / timed(stock_one))
            runs.setdefault("ours", []).append(n / timed(ours_one))
            runs.setdefault("stock_bulk", []).append(bulk_n / timed(stock_bulk))
            runs.setdefault("ours_bulk", []).append(bulk_n / timed(ours_bulk))
            if modules is not None:
                conn.flushall()
                runs.setdefault("add", []).append(bull.run(modules, "add", redis_url, n))
                conn.flushall()
                runs.setdefault("add_bulk", []).append(bull.run(modules, "addBulk", redis_url, bulk_n))
    m = {key: statistics.median(values) for key, values in runs.items()}
    stock_rate, ours_rate = m["stock"], m["ours"]
    stock_bulk_rate, ours_bulk_rate = m["stock_bulk"], m["ours_bulk"]
    one, bulk = "enqueue one by one, in process", "bulk enqueue, batches of 1,000"
    rows = [
        row(one, f"{ours_rate:,.0f}/s", f"{stock_rate:,.0f}/s `Queue.enqueue`", ours_rate / stock_rate),
        row(
            bulk,
            f"{ours_bulk_rate:,.0f}/s",
            f"{stock_bulk_rate:,.0f}/s `enqueue_many`",
            ours_bulk_rate / stock_bulk_rate,
        ),
    ]
    if "add" in m:
        rows.insert(
            1, row(one, f"{ours_rate:,.0f}/s", f"{m['add']:,.0f}/s Bull v4 `add`", ours_rate / m["add"])
        )
        bull_bulk = f"{m['add_bulk']:,.0f}/s Bull v4 `addBulk`"
        rows.append(row(bulk, f"{ours_bulk_rate:,.0f}/s", bull_bulk, ours_bulk_rate / m["add_bulk"]))
    engine.dispose()
    conn.close()
    return rows


def _prepare_options(options: dict[str, object]) -> dict[str, object]:
    """``job_options`` spelled for ``Queue.prepare_data`` (``timeout`` instead of ``job_timeout``)."""
    prepared = dict(options)
    prepared["timeout"] = prepared.pop("job_timeout")
    return prepared


def main() -> None:
    """Print the enqueue rows."""
    print_rows(measure, __doc__)


if __name__ == "__main__":
    main()
