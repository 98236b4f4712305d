"""The dashboard's Redis page (figures, eviction warning) and the stats behind it (memory, latencies)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from producer.redis_page import eviction_verdict, human_bytes
from shared import stats
from shared.connections.identity import server_identity
from shared.constants import (
    MEMBER_QUEUE,
)
from shared.keys import KEYS
from shared.settings import Settings
from tests.producer.dashboard_support import AUTH, enqueue, make_app, work
from tests.servers import close_app, private_redis_proc

# This module's own redis-server: the commands it runs (each allocates a latency histogram in
# Redis 7) and the settings it changes stay out of the session's server.
redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)


def cell(page: str, field: str) -> str:
    match = re.search(rf'data-field="{field}"[^>]*>([^<]*)<', page)
    assert match, f"no {field} in the page"
    return match.group(1).strip()


def test_redis_page_figures(dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any) -> None:
    for i in range(3):
        enqueue(r, settings, {"name": f"done{i}", "age": 1})
    work(r)
    for i in range(5):
        enqueue(r, settings, {"name": f"waiting{i}", "age": 1})
    r.hset(KEYS.lock_stats, mapping={"acquired": 7, "contended": 3, "failed": 2, "released": 6, "lost": 1})
    old_max = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", str(64 * 1024 * 1024))
    try:
        page = dash.get("/dashboard/redis", headers=AUTH).data.decode()
    finally:
        r.config_set("maxmemory", old_max)
    info = r.info("memory")
    # Redis or Valkey (TEST_REDIS_SERVER), named with its own version.
    identity = server_identity(r)
    assert re.search(rf'data-field="server">{identity.title}<', page), identity
    assert ("Redis-compatible 7.2" in page) == identity.is_valkey
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", cell(page, "used_memory"))
    assert cell(page, "used_memory_rss")
    assert cell(page, "used_memory_peak")
    assert float(cell(page, "mem_fragmentation_ratio")) > 0
    assert cell(page, "maxmemory").startswith("64.00 MiB")
    assert cell(page, "maxmemory_policy") == info["maxmemory_policy"] == "noeviction"
    assert "safe: noeviction" in page
    row = re.search(r'<tr data-queue="member">(.*?)</tr>', page, re.S)
    assert row is not None
    assert re.search(r'data-registry="queued">5<', row.group(1))
    assert re.search(r'data-registry="finished">3<', row.group(1))
    assert cell(page, "finished_last_minute") == "3" or cell(page, "finished_last_hour") == "3"
    assert cell(page, "finished_last_hour") == "3"
    assert cell(page, "acquired") == "7" and cell(page, "contended") == "3" and cell(page, "failed") == "2"
    assert cell(page, "extended") == "0" and cell(page, "lost") == "1"
    jobs_that_fit = int(cell(page, "jobs_that_fit").replace(",", ""))
    per_job = float(cell(page, "bytes_per_job"))
    assert 100 < per_job < 10_000
    assert jobs_that_fit == pytest.approx((64 * 1024 * 1024 - info["used_memory"]) / per_job, rel=0.05)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page
    assert 'id="memory-line"' in page  # the page's own sample is drawn
    # Nothing is loaded from another host (the footer's plain links are not loaded).
    assert not re.search(r'src="(https?:)?//', page)
    assert not re.search(r'<link[^>]+href="(https?:)?//', page)


def test_redis_page_warns_about_an_evicting_policy(dash: FlaskClient, r: redis.Redis) -> None:
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        page = dash.get("/dashboard/redis", headers=AUTH).data.decode()
    finally:
        r.config_set("maxmemory-policy", "noeviction")
    assert cell(page, "maxmemory_policy") == "allkeys-lru"
    assert "UNSAFE: allkeys-lru" in page
    assert 'class="text-danger' in page


def test_eviction_verdict() -> None:
    assert eviction_verdict("noeviction", 1024).safe
    assert eviction_verdict("noeviction", 0).safe
    for policy in ("allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "allkeys-lfu"):
        assert not eviction_verdict(policy, 1024).safe


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.50 KiB"
    assert human_bytes(64 * 1024 * 1024) == "64.00 MiB"


def test_memory_samples_are_taken_once_per_interval_and_capped(r: redis.Redis) -> None:
    now = time.time()
    assert stats.record_memory_sample(r, 60, now=now - 4000)
    assert not stats.record_memory_sample(r, 60, now=now - 3990)  # another process took this turn
    r.delete("archive:stats:memory:sampler")
    assert stats.record_memory_sample(r, 60, now=now)
    samples = stats.memory_samples(r, now=now)
    assert len(samples) == 1  # the one from over an hour ago was dropped
    assert samples[0]["used_memory"] > 0 and "maxmemory" in samples[0]
    for i in range(stats.MEMORY_SAMPLES_MAX + 5):
        stats.record_memory_sample(r, 0, now=now + i * 0.001)
    assert r.zcard(KEYS.memory_samples) == stats.MEMORY_SAMPLES_MAX


def test_stats_tick_flushes_latencies_and_samples_memory_when_due(settings: Settings, r: redis.Redis) -> None:

    from producer.background import stats_tick

    app = make_app(settings, memory_sample_seconds=5.0)
    try:
        state = app.extensions["redis_archive"]
        state.enqueue_latency.observe(MEMBER_QUEUE, 0.003)
        now = time.time()
        assert stats_tick(state, 0.0, now) == now
        assert stats.histograms(r, KEYS.enqueue_latency)[MEMBER_QUEUE].count == 1
        assert r.zcard(KEYS.memory_samples) == 1
        assert stats_tick(state, now, now + 1) == now  # not due yet
        assert r.zcard(KEYS.memory_samples) == 1
        r.delete("archive:stats:memory:sampler")
        assert stats_tick(state, now, now + 5) == now + 5
        assert r.zcard(KEYS.memory_samples) == 2
    finally:
        close_app(app)


def test_stats_thread_runs_until_stopped(settings: Settings, r: redis.Redis) -> None:
    from producer.background import start_stats_thread

    app = make_app(settings, memory_sample_seconds=0.5)
    try:
        stop = start_stats_thread(app)
        deadline = time.monotonic() + 10
        while not r.zcard(KEYS.memory_samples) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        assert r.zcard(KEYS.memory_samples) >= 1
    finally:
        close_app(app)
