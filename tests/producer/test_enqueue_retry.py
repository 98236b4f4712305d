"""The producer's enqueue across a failover: bounded retries, 503, durable enqueue with WAIT."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from producer import create_app
from producer import enqueue as enqueue_module
from shared.settings import Settings
from shared.stack.procs import free_port
from tests.servers import RedisProc, close_app, start_redis

MEMBER = {"name": "Kim", "age": 30}


def make_app(settings: Settings, **overrides: Any) -> Flask:
    return create_app({"TESTING": True, **asdict(settings.with_overrides(**overrides))})


@pytest.fixture
def app_factory() -> Iterator[Any]:
    apps: list[Flask] = []

    def factory(settings: Settings, **overrides: Any) -> FlaskClient:
        app = make_app(settings, **overrides)
        apps.append(app)
        return app.test_client()

    yield factory
    for app in apps:
        close_app(app)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisProc, RedisProc]]:
    """A private master and its replica, in sync (the session's server keeps no backlog)."""
    master = start_redis(tmp_path / "master", "--repl-diskless-sync-delay", "0")
    server = start_redis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    client = server.client()
    deadline = time.monotonic() + 10
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica did not sync"
        time.sleep(0.05)
    client.close()
    yield master, server
    server.kill()
    master.kill()


def _job_keys(client: redis.Redis) -> list[bytes]:
    return [k for k in client.keys("rq:job:*") if k.count(b":") == 2]


def test_redis_down_answers_503_after_the_retry_window(app_factory: Any, db_url: str) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=db_url)
    client = app_factory(settings, enqueue_retry_seconds=0.4)
    started = time.monotonic()
    response = client.post("/queue/members", json=MEMBER)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "unavailable"
    # It kept trying for the whole window before giving up.
    assert elapsed >= 0.3


def test_enqueue_rides_out_a_restart_within_the_window(app_factory: Any, db_url: str, tmp_path: Path) -> None:
    server = start_redis(tmp_path / "r")
    try:
        settings = Settings(redis_url=server.url, database_url=db_url)
        client = app_factory(settings, enqueue_retry_seconds=10)
        assert client.post("/queue/members", json=MEMBER).status_code == 202
        server.kill()
        restarter = threading.Timer(0.5, server.restart)
        restarter.start()
        response = client.post("/queue/members", json=MEMBER)
        restarter.join()
        assert response.status_code == 202
        job_id = response.get_json()["jobId"]
        check = server.client()
        assert check.lrange("rq:queue:member", 0, -1) == [job_id.encode()]
        assert check.hget(f"rq:job:{job_id}", "status") == b"queued"
        check.close()
    finally:
        server.kill()


def test_a_read_only_replica_gets_503_and_no_job(
    app_factory: Any, pair: tuple[RedisProc, RedisProc], db_url: str
) -> None:
    master, replica = pair
    settings = Settings(redis_url=replica.url, database_url=db_url)
    client = app_factory(settings, enqueue_retry_seconds=0.3)
    response = client.post("/queue/members", json=MEMBER)
    assert response.status_code == 503
    check = master.client()
    assert _job_keys(check) == []
    check.close()


def test_an_unanswered_write_is_retried_without_a_second_copy(
    app_factory: Any, settings: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = enqueue_module.write_jobs
    calls: list[list[str]] = []

    def write_then_lose_the_reply(*args: Any) -> list[str]:
        ids = real_write(*args)
        calls.append(ids)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("reply lost")
        return ids

    monkeypatch.setattr(enqueue_module, "write_jobs", write_then_lose_the_reply)
    client = app_factory(settings)
    response = client.post("/queue/members", json=MEMBER)
    assert response.status_code == 202
    job_id = response.get_json()["jobId"]
    # The job was on the master: the retry checked instead of writing it again.
    assert calls == [[job_id]]
    assert r.lrange("rq:queue:member", 0, -1) == [job_id.encode()]


def test_durable_enqueue_without_replicas_is_refused_and_withdrawn(
    app_factory: Any, settings: Settings, r: redis.Redis
) -> None:
    client = app_factory(
        settings, enqueue_min_replicas=1, enqueue_replica_timeout_ms=100, enqueue_retry_seconds=0.3
    )
    response = client.post("/queue/members", json=MEMBER)
    assert response.status_code == 503
    assert "0 of 1 replicas" in response.get_json()["error"]["message"]
    # A refused job is not left behind to run anyway.
    assert r.llen("rq:queue:member") == 0
    assert _job_keys(r) == []


def test_durable_enqueue_answers_202_once_a_replica_has_the_job(
    app_factory: Any, pair: tuple[RedisProc, RedisProc], db_url: str
) -> None:
    master, replica = pair
    settings = Settings(redis_url=master.url, database_url=db_url)
    client = app_factory(settings, enqueue_min_replicas=1)
    response = client.post("/queue/members", json=MEMBER)
    assert response.status_code == 202
    job_id = response.get_json()["jobId"]
    on_replica = replica.client()
    try:
        # No polling: WAIT returned only after the replica acknowledged the write.
        assert on_replica.hget(f"rq:job:{job_id}", "status") == b"queued"
        assert job_id.encode() in on_replica.lrange("rq:queue:member", 0, -1)
    finally:
        on_replica.close()
