"""GET /metrics: counters equal to the jobs processed by real worker processes, depths, memory, lock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer import create_app
from shared import stats
from shared.constants import MEMBER_QUEUE
from shared.exceptions import LockTimeoutError
from shared.keys import KEYS
from shared.lock import Redlock
from shared.settings import Settings
from shared.stack.local import worker_argv
from tests.servers import close_app, private_redis_proc, run_env, start_redis

# This module's own redis-server: the commands it runs (each allocates a latency histogram in
# Redis 7) and the settings it changes stay out of the session's server.
redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from ``/metrics``."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metrics_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(
        {"TESTING": True, **asdict(settings.with_overrides(job_attempts=2, retry_intervals=(0,)))}
    )
    yield app
    close_app(app)


def run_worker(settings: Settings, worker_class: str | None = None) -> None:
    """A real ``rq worker --burst`` process on the test's Redis and database."""
    env = run_env(REDIS_URL=settings.redis_url, DATABASE_URL=settings.database_url, ALERT_WEBHOOK_URL="")
    argv = worker_argv([MEMBER_QUEUE], burst=True, worker_class=worker_class)
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.mark.parametrize(
    "worker_class", [None, "consumer.worker.FastWorker"], ids=["rq-Worker", "FastWorker"]
)
def test_counters_equal_the_jobs_processed(
    metrics_app: Flask, settings: Settings, r: redis.Redis, worker_class: str | None
) -> None:
    client = metrics_app.test_client()
    good, bad = 7, 2
    for i in range(good):
        assert client.post("/queue/members", json={"name": f"m{i}", "age": 20}).status_code == 202
    # Payloads the job refuses: they fail, are retried once (JOB_ATTEMPTS=2), then fail for good.
    queue = metrics_app.extensions["redis_archive"].queue(MEMBER_QUEUE)
    from producer.enqueue import enqueue

    for _ in range(bad):
        enqueue(
            metrics_app.extensions["redis_archive"], MEMBER_QUEUE, "consumer.jobs.create_member", "bad", {}
        )
    before = scrape(client)
    assert value(before, "archive_queue_jobs", queue="member", registry="queued") == good + bad
    assert value(before, "archive_jobs_enqueued_total", queue="member") == good + bad
    assert value(before, "archive_jobs_finished_total", queue="member") == 0

    run_worker(settings, worker_class)

    after = scrape(client)
    assert value(after, "archive_jobs_enqueued_total", queue="member") == good + bad
    assert value(after, "archive_jobs_finished_total", queue="member") == good
    assert value(after, "archive_jobs_failed_total", queue="member") == bad
    assert value(after, "archive_jobs_retried_total", queue="member") == bad
    assert value(after, "archive_queue_jobs", queue="member", registry="queued") == 0
    assert value(after, "archive_queue_jobs", queue="member", registry="finished") == good
    assert value(after, "archive_queue_jobs", queue="member", registry="failed") == bad
    assert queue.count == 0
    # Every attempt is timed: 7 successes and 2 x 2 failed attempts.
    attempts = good + 2 * bad
    assert value(after, "archive_job_duration_seconds_count", queue="member") == attempts
    assert value(after, "archive_job_duration_seconds_bucket", queue="member", le="+Inf") == attempts
    assert value(after, "archive_job_duration_seconds_sum", queue="member") > 0
    assert value(after, "archive_job_wait_seconds_count", queue="member") == attempts
    assert value(after, "archive_enqueue_latency_seconds_count", queue="member") == good + bad
    assert 0 < value(after, "archive_enqueue_latency_seconds_sum", queue="member") < 10
    # Buckets are cumulative and end at the count.
    bounds = [b for b in (*stats.DURATION_BUCKETS, float("inf"))]
    counts = [
        value(
            after,
            "archive_job_duration_seconds_bucket",
            queue="member",
            le="+Inf" if b == float("inf") else repr(b),
        )
        for b in bounds
    ]
    assert counts == sorted(counts)
    # The throughput the dashboard shows comes from the same callbacks.
    assert sum(count for _, count in stats.finished_per_minute(r, 5)) == good


def test_counters_are_shared_between_producer_processes(
    metrics_app: Flask, settings: Settings, r: redis.Redis
) -> None:
    other = create_app({"TESTING": True, **asdict(settings)})
    try:
        for i in range(3):
            other.test_client().post("/queue/members", json={"name": f"o{i}", "age": 1})
        for i in range(2):
            metrics_app.test_client().post("/queue/members", json={"name": f"m{i}", "age": 1})
        for app in (metrics_app, other):
            assert value(scrape(app.test_client()), "archive_jobs_enqueued_total", queue="member") == 5
    finally:
        close_app(other)


def test_memory_and_lock_figures(metrics_app: Flask, settings: Settings, r: redis.Redis) -> None:
    lock = Redlock.from_settings(settings, stats=r)
    try:
        for _ in range(2):
            with lock.acquire("metrics", ttl=10):
                with pytest.raises(LockTimeoutError):
                    lock.acquire("metrics", ttl=10, timeout=0)
        lease = lock.acquire("metrics", ttl=10)
        assert lease.extend(10)
    finally:
        lock.close()
    assert r.hget(KEYS.lock_stats, "acquired") == b"3"  # written by the lock itself
    old = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", str(100 * 1024 * 1024))
    try:
        samples = scrape(metrics_app.test_client())
    finally:
        r.config_set("maxmemory", old)
    assert value(samples, "archive_redis_up") == 1
    assert value(samples, "archive_redis_maxmemory_bytes") == 100 * 1024 * 1024
    used = value(samples, "archive_redis_used_memory_bytes")
    assert used == pytest.approx(r.info("memory")["used_memory"], rel=0.2)
    assert value(samples, "archive_redis_used_memory_rss_bytes") > 0
    assert value(samples, "archive_lock_acquired_total") == 3
    assert value(samples, "archive_lock_contended_total") == 2
    assert value(samples, "archive_lock_failed_total") == 2
    assert value(samples, "archive_lock_released_total") == 2
    assert value(samples, "archive_lock_extended_total") == 1
    assert value(samples, "archive_lock_lost_total") == 0


def test_redis_down_is_a_metric_not_an_error(settings: Settings, tmp_path: Path) -> None:
    server = start_redis(tmp_path / "gone")
    app = create_app({"TESTING": True, **asdict(settings.with_overrides(redis_url=server.url))})
    try:
        server.kill()
        samples = scrape(app.test_client())
        assert value(samples, "archive_redis_up") == 0
        assert len(samples) == 1
    finally:
        close_app(app)


def test_metrics_is_documented_as_text(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    response = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(response["content"]) == ["text/plain"]
    assert response["content"]["text/plain"]["schema"] == {"type": "string"}


def test_enqueue_latencies_wait_for_redis(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "flaky")
    conn = server.client(retry=Retry(NoBackoff(), 0))
    try:
        pending = stats.PendingHistogram(KEYS.enqueue_latency)
        pending.observe(MEMBER_QUEUE, 0.002)
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            pending.flush(conn)
        pending.observe(MEMBER_QUEUE, 0.004)
        server.restart()
        assert pending.flush(conn) == 4  # two buckets, sum, count: nothing was lost
        histogram = stats.histograms(conn, KEYS.enqueue_latency)[MEMBER_QUEUE]
        assert histogram.count == 2
        assert histogram.total == pytest.approx(0.006)
        assert pending.flush(conn) == 0
    finally:
        conn.close()
        server.kill()


def test_worker_module_runs_in_a_clean_interpreter() -> None:
    # The consumer's callbacks import shared.stats; the consumer must still not import Flask.
    code = "import consumer.events, sys; assert 'flask' not in sys.modules, 'flask imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
