"""The goods stock under the lock: contended processes, dead nodes, a paused holder, the API and the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from consumer import context
from consumer import goods as goods_jobs
from producer import create_app
from shared.constants import DECREMENT_STOCK_JOB, GOODS_QUEUE
from shared.db import goods_stock_change, init_db, make_engine
from shared.exceptions import InsufficientStockError, StaleFenceError
from shared.goods import Goods, apply_decrement, create_goods, decrement_stock, get_goods
from shared.keys import KEYS
from shared.lock import Redlock
from shared.lock.demo import run_load
from shared.settings import Settings
from shared.stack.local import worker_argv
from shared.stack.procs import free_port
from tests.servers import RedisProc, close_app, kill_all, run_env

# --- real processes, real database --------------------------------------------------------------


def test_four_processes_sell_exactly_the_stock(lock_urls: list[str], db_url: str) -> None:
    result = run_load(db_url, lock_urls, processes=4, attempts=250, stock=1000)
    assert (result.successes, result.final, result.refused, dict(result.errors)) == (1000, 0, 0, {})
    assert result.lost_updates == 0


def test_more_attempts_than_stock_refuses_exactly_the_excess(lock_urls: list[str], db_url: str) -> None:
    result = run_load(db_url, lock_urls, processes=4, attempts=300, stock=1000)
    assert (result.successes, result.refused, result.final, dict(result.errors)) == (1000, 200, 0, {})
    assert result.oversold == 0


def test_one_node_killed_mid_run_is_still_exact(
    lock_urls: list[str], db_url: str, lock_nodes: list[RedisProc]
) -> None:
    result = run_load(db_url, lock_urls, processes=4, attempts=250, stock=1000, midway=lock_nodes[0].kill)
    assert not lock_nodes[0].alive()
    assert (result.successes, result.final, dict(result.errors)) == (1000, 0, {})


def test_two_nodes_down_refuses_every_attempt_and_changes_nothing(
    lock_urls: list[str], db_url: str, lock_nodes: list[RedisProc]
) -> None:
    lock_nodes[0].kill()
    lock_nodes[1].kill()
    result = run_load(db_url, lock_urls, processes=4, attempts=250, stock=1000)
    assert result.successes == 0
    assert dict(result.errors) == {"LockUnavailableError": 1000}
    assert "only 1 of 3 Redis nodes answered" in result.messages["LockUnavailableError"]
    assert result.final == 1000


def test_without_the_lock_the_same_load_loses_updates(db_url: str) -> None:
    result = run_load(db_url, None, processes=4, attempts=250, stock=1000, think=0.001)
    assert result.successes == 1000
    assert result.final > 0  # every decrement "succeeded", yet the stock shows fewer
    assert result.lost_updates == result.final > 0


@pytest.mark.parametrize("database", ["postgresql", "mysql"])
def test_contended_decrement_on_server_databases(
    lock_urls: list[str], database: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue("postgres_url" if database == "postgresql" else "mysql_url")
    result = run_load(url, lock_urls, processes=3, attempts=40, stock=100, goods_name=database)
    assert (result.successes, result.refused, result.final, dict(result.errors)) == (100, 20, 0, {})


PAUSED_HOLDER = """
import json, os, signal, sys
from shared.db import make_engine
from shared.exceptions import InsufficientStockError, StaleFenceError
from shared.lock import Redlock
from shared.goods import decrement_stock
engine = make_engine(sys.argv[1])
redlock = Redlock(sys.argv[3:])
try:
    # Stops itself after every check passed, just before its write, while holding the lock.
    decrement_stock(redlock, engine, int(sys.argv[2]), 1, ttl=1.0,
                    before_write=lambda: os.kill(os.getpid(), signal.SIGSTOP))
    print(json.dumps({"outcome": "written"}))
except StaleFenceError as exc:
    print(json.dumps({"outcome": "StaleFenceError", "message": str(exc)}))
finally:
    redlock.close()
    engine.dispose()
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_paused_holder_write_is_rejected_by_the_fence(lock_urls: list[str], db_url: str) -> None:
    engine = make_engine(db_url)
    init_db(engine)
    goods_id = create_goods(engine, "paused", 10).goods_id
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_HOLDER, db_url, str(goods_id), *lock_urls],
        stdout=subprocess.PIPE,
        env=run_env(),
    )
    redlock = Redlock(lock_urls)
    try:
        deadline = time.monotonic() + 30
        while not _stopped(child.pid):
            assert child.poll() is None and time.monotonic() < deadline, "the holder never paused"
            time.sleep(0.02)
        # The paused holder's TTL runs out; a new holder takes the lock and writes.
        newer = decrement_stock(redlock, engine, goods_id, 3, timeout=10)
        assert newer.stock == 7
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
        report = json.loads(out)
        assert report["outcome"] == "StaleFenceError"
        assert "newer than fence" in report["message"]
        after = get_goods(engine, goods_id)
        assert after.stock == 7
        assert after.fence_token == newer.fence_token
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
        redlock.close()
        engine.dispose()


def test_stale_holder_cannot_write_after_a_newer_one_only_read(db_url: str) -> None:
    """The newer holder has claimed the row but not written yet: the stale write is refused too."""
    engine = make_engine(db_url)
    init_db(engine)
    goods_id = create_goods(engine, "claimed", 10).goods_id

    def newer_holder_reads() -> None:
        # Fence 6 claims the row and reads it; asking for too much, it writes nothing.
        with pytest.raises(InsufficientStockError):
            apply_decrement(engine, goods_id, 100, 6)

    try:
        with pytest.raises(StaleFenceError):
            apply_decrement(engine, goods_id, 1, 5, before_write=newer_holder_reads)
        assert get_goods(engine, goods_id) == Goods(goods_id, "claimed", 10, 6)
        with pytest.raises(StaleFenceError):
            apply_decrement(engine, goods_id, 1, 5)  # an old token cannot even claim
    finally:
        engine.dispose()


# --- HTTP API ----------------------------------------------------------------------------------


@pytest.fixture
def lock_app(settings: Settings, lock_urls: list[str]) -> Iterator[Flask]:
    app = create_app({"TESTING": True, **asdict(settings.with_overrides(lock_redis_urls=tuple(lock_urls)))})
    yield app
    close_app(app)


@pytest.fixture
def api(lock_app: Flask) -> FlaskClient:
    return lock_app.test_client()


def new_goods(api: FlaskClient, stock: int = 5) -> int:
    response = api.post("/goods", json={"goods_name": "widget", "stock": stock})
    assert response.status_code == 201
    body = response.get_json()
    assert body == {"goods_id": body["goods_id"], "goods_name": "widget", "stock": stock, "fence_token": 0}
    return int(body["goods_id"])


def test_patch_decrements_under_the_lock(api: FlaskClient, r: redis.Redis) -> None:
    goods_id = new_goods(api, 5)
    response = api.patch(f"/goods/{goods_id}/stocks", json={"stock": 2})
    assert response.status_code == 200
    assert response.get_json()["stock"] == 3
    assert response.get_json()["fence_token"] >= 1
    assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 3
    assert int(r.hget(KEYS.lock_stats, "acquired") or 0) == 1
    assert int(r.hget(KEYS.lock_stats, "released") or 0) == 1


def test_patch_insufficient_is_409_and_changes_nothing(api: FlaskClient) -> None:
    goods_id = new_goods(api, 1)
    response = api.patch(f"/goods/{goods_id}/stocks", json={"stock": 2})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "insufficient_stock"
    assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 1


def test_unknown_goods_is_404(api: FlaskClient) -> None:
    assert api.get("/goods/999").status_code == 404
    assert api.patch("/goods/999/stocks", json={"stock": 1}).status_code == 404
    assert api.post("/queue/goods/999/stocks", json={"stock": 1}).status_code == 404
    assert api.get("/goods/999").get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [{"stock": 0}, {"stock": -1}, {"stock": "1"}, {"stock": True}, {"stock": 1.5}, {}, {"stock": 1, "x": 1}],
)
def test_bad_stock_change_is_422(api: FlaskClient, body: dict[str, object]) -> None:
    goods_id = new_goods(api, 5)
    response = api.patch(f"/goods/{goods_id}/stocks", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"]
    assert api.post(f"/queue/goods/{goods_id}/stocks", json=body).status_code == 422
    assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 5


@pytest.mark.parametrize(
    "body", [{"goods_name": "", "stock": 1}, {"goods_name": "a", "stock": -1}, {"goods_name": "a"}, []]
)
def test_bad_goods_is_422(api: FlaskClient, body: object) -> None:
    assert api.post("/goods", json=body).status_code == 422


def test_no_quorum_is_503_and_changes_nothing(settings: Settings, lock_urls: list[str]) -> None:
    dead = tuple(f"redis://127.0.0.1:{free_port()}/0" for _ in range(2))
    overrides = settings.with_overrides(lock_redis_urls=(lock_urls[0], *dead))
    app = create_app({"TESTING": True, **asdict(overrides)})
    try:
        api = app.test_client()
        goods_id = new_goods(api, 5)
        response = api.patch(f"/goods/{goods_id}/stocks", json={"stock": 1})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        error = response.get_json()["error"]
        assert error["code"] == "lock_unavailable"
        assert "only 1 of 3" in error["message"]
        assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 5
    finally:
        close_app(app)


def test_goods_routes_are_documented(api: FlaskClient) -> None:
    paths = api.get("/openapi.json").get_json()["paths"]
    patch = paths["/goods/{goods_id}/stocks"]["patch"]
    assert {"200", "404", "409", "422", "503"} <= set(patch["responses"])
    assert "post" in paths["/goods"] and "get" in paths["/goods/{goods_id}"]
    assert "202" in paths["/queue/goods/{goods_id}/stocks"]["post"]["responses"]


# --- the queued decrement ----------------------------------------------------------------------


@pytest.fixture
def job_env(worker_env: pytest.MonkeyPatch, lock_urls: list[str]) -> Iterator[pytest.MonkeyPatch]:
    worker_env.setenv("LOCK_REDIS_URLS", ",".join(lock_urls))
    context.get_settings.cache_clear()
    yield worker_env
    goods_jobs.close_redlocks()


def test_queued_decrement_runs_under_the_lock_once_per_job(
    api: FlaskClient, r: redis.Redis, job_env: pytest.MonkeyPatch, db_url: str
) -> None:
    goods_id = new_goods(api, 5)
    response = api.post(f"/queue/goods/{goods_id}/stocks", json={"stock": 2})
    assert response.status_code == 202
    job_id = response.get_json()["jobId"]
    queue = Queue(GOODS_QUEUE, connection=r, serializer=JSONSerializer)
    job = queue.fetch_job(job_id)
    assert job is not None and job.func_name == DECREMENT_STOCK_JOB
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    job.refresh()
    assert job.return_value() == {
        "goods_id": goods_id, "goods_name": "widget", "stock": 3, "fence_token": 1, "applied": True,
    }  # fmt: skip
    # A re-run of the same job (a crashed worker's job picked up again) does not decrement twice.
    queue.enqueue(DECREMENT_STOCK_JOB, goods_id, 2, job_id=job_id)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 3
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(goods_stock_change)).scalar_one() == 1
    engine.dispose()
    assert int(r.hget(KEYS.lock_stats, "acquired") or 0) == 2


def test_queued_decrement_beyond_the_stock_is_not_applied(
    api: FlaskClient, r: redis.Redis, job_env: pytest.MonkeyPatch
) -> None:
    goods_id = new_goods(api, 1)
    job_id = api.post(f"/queue/goods/{goods_id}/stocks", json={"stock": 2}).get_json()["jobId"]
    queue = Queue(GOODS_QUEUE, connection=r, serializer=JSONSerializer)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    job = queue.fetch_job(job_id)
    assert job is not None
    result = job.return_value()
    assert result is not None and result["applied"] is False and result["stock"] == 1
    assert "less than 2" in result["reason"]


def test_real_workers_contend_for_the_same_lock(
    api: FlaskClient, r: redis.Redis, settings: Settings, lock_urls: list[str], tmp_path: Path
) -> None:
    goods_id = new_goods(api, 30)
    for _ in range(40):
        assert api.post(f"/queue/goods/{goods_id}/stocks", json={"stock": 1}).status_code == 202
    env = run_env(
        REDIS_URL=settings.redis_url, DATABASE_URL=settings.database_url, LOCK_REDIS_URLS=",".join(lock_urls)
    )
    workers = [
        subprocess.Popen(worker_argv([GOODS_QUEUE], burst=True), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]  # fmt: skip
    try:
        for proc in workers:
            assert proc.wait(120) == 0
    finally:
        kill_all(workers)
    assert api.get(f"/goods/{goods_id}").get_json()["stock"] == 0
    queue = Queue(GOODS_QUEUE, connection=r, serializer=JSONSerializer)
    results = [queue.fetch_job(job_id) for job_id in queue.finished_job_registry.get_job_ids()]
    applied = [job.return_value()["applied"] for job in results if job is not None]  # type: ignore[index]
    assert sorted(applied) == [False] * 10 + [True] * 30
    assert int(r.hget(KEYS.lock_stats, "acquired") or 0) == 40
