"""The cache API against a real redis-server: every status code, TTLs, key and value edge cases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from producer import create_app
from producer.cache import EXPIRE_MAX_MS
from shared.keys import CACHE_PREFIX
from shared.settings import Settings
from tests.producer.cache_support import (
    BAD_BODIES,
    MAX_VALUE,
    REFUSED_KEYS,
    URL,
    assert_error,
    big_value,
    post_raw,
    put,
    url,
)
from tests.servers import RedisProc, close_app, start_redis

# --- 201, 200, 404, 409 ---------------------------------------------------------------------


def test_set_answers_201_and_stores_compact_json_under_the_prefix_with_px(
    client: FlaskClient, r: redis.Redis
) -> None:
    response = put(client, "user:1", {"name": "Kim", "tags": ["a", "b"], "n": 1.5}, expire=60_000)
    assert response.status_code == 201
    assert response.get_json() == {"key": "user:1", "ttlMs": 60_000}
    assert r.get(CACHE_PREFIX + "user:1") == b'{"name":"Kim","tags":["a","b"],"n":1.5}'
    assert 59_000 < r.pttl(CACHE_PREFIX + "user:1") <= 60_000
    assert r.keys("*") == [(CACHE_PREFIX + "user:1").encode()]


def test_get_answers_200_with_key_value_and_remaining_ttl(client: FlaskClient) -> None:
    value = {"nested": {"list": [1, None, True, "ü"]}, "x": -3}
    assert put(client, "k", value, expire=120_000).status_code == 201
    response = client.get(url("k"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["key"] == "k"
    assert body["value"] == value
    assert 110_000 < body["ttlMs"] <= 120_000


def test_get_and_delete_of_a_missing_key_answer_404(client: FlaskClient) -> None:
    assert_error(client.get(url("nope")), 404, "not_found")
    assert_error(client.delete(url("nope")), 404, "not_found")


def test_delete_answers_200_then_the_key_is_gone(client: FlaskClient, r: redis.Redis) -> None:
    put(client, "gone", {"a": 1})
    response = client.delete(url("gone"))
    assert response.status_code == 200
    assert response.get_json() == {"key": "gone", "deleted": True}
    assert r.exists(CACHE_PREFIX + "gone") == 0
    assert_error(client.get(url("gone")), 404, "not_found")
    assert_error(client.delete(url("gone")), 404, "not_found")


def test_nx_answers_409_when_present_and_leaves_the_value(client: FlaskClient, r: redis.Redis) -> None:
    assert put(client, "once", {"v": 1}, nx=True).status_code == 201
    error = assert_error(put(client, "once", {"v": 2}, nx=True), 409, "conflict")
    assert "once" in error["message"]
    assert json.loads(r.get(CACHE_PREFIX + "once") or b"") == {"v": 1}
    # Without nx (or nx false) a set overwrites and renews the TTL.
    assert put(client, "once", {"v": 3}, expire=5_000, nx=False).status_code == 201
    assert client.get(url("once")).get_json()["value"] == {"v": 3}
    assert put(client, "once", {"v": 4}, expire=90_000).status_code == 201
    assert client.get(url("once")).get_json()["ttlMs"] > 80_000


def test_ttl_really_expires(client: FlaskClient) -> None:
    assert put(client, "short", {"v": 1}, expire=50).status_code == 201
    assert client.get(url("short")).status_code == 200
    time.sleep(0.1)
    assert_error(client.get(url("short")), 404, "not_found")
    assert put(client, "shortest", {"v": 1}, expire=1).status_code == 201
    time.sleep(0.01)
    assert_error(client.get(url("shortest")), 404, "not_found")


def test_expire_bounds_are_inclusive(client: FlaskClient, r: redis.Redis) -> None:
    assert put(client, "max", {"v": 1}, expire=EXPIRE_MAX_MS).status_code == 201
    assert r.pttl(CACHE_PREFIX + "max") > EXPIRE_MAX_MS - 10_000
    assert put(client, "min", {"v": 1}, expire=1).status_code == 201


def test_expire_written_as_an_integral_float_is_an_integer(client: FlaskClient, r: redis.Redis) -> None:
    # JSON has one number type; JSON Schema counts 5000.0 as an integer, and so do we.
    response = post_raw(client, '{"key": "f", "value": {"v": 1}, "expire": 5000.0}')
    assert response.status_code == 201
    assert response.get_json()["ttlMs"] == 5000
    assert 4000 < r.pttl(CACHE_PREFIX + "f") <= 5000


# --- a separate cache Redis: CACHE_REDIS_URL, nothing unvalidated reaches it, 503 ----------------


@pytest.fixture(scope="module")
def cache_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    server = start_redis(tmp_path_factory.mktemp("cache-redis"), "--maxmemory-policy", "allkeys-lru")
    yield server
    server.kill()


@pytest.fixture
def cache_app(settings: Settings, cache_redis: RedisProc) -> Iterator[Flask]:
    probe = cache_redis.client()
    probe.flushall()
    probe.close()
    app = create_app({"TESTING": True, **asdict(settings), "cache_redis_url": cache_redis.url})
    yield app
    close_app(app)


def test_cache_redis_url_puts_cache_keys_on_their_own_server(
    cache_app: Flask, cache_redis: RedisProc, r: redis.Redis
) -> None:
    client = cache_app.test_client()
    assert put(client, "there", {"v": 1}).status_code == 201
    probe = cache_redis.client()
    try:
        assert probe.get(CACHE_PREFIX + "there") == b'{"v":1}'
        assert r.dbsize() == 0
        assert client.get(url("there")).get_json()["value"] == {"v": 1}
        # The queue is still on REDIS_URL.
        assert client.post("/queue/members", json={"name": "a", "age": 1}).status_code == 202
        assert r.dbsize() > 0 and probe.dbsize() == 1
        assert client.get("/readyz").get_json()["checks"]["cache_redis"] == "ok"
    finally:
        probe.close()


def command_stats(conn: redis.Redis) -> dict[str, int]:
    stats = conn.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_nothing_unvalidated_reaches_redis(cache_app: Flask, cache_redis: RedisProc) -> None:
    client = cache_app.test_client()
    probe = cache_redis.client()
    try:
        probe.config_resetstat()
        for _, body, _ in BAD_BODIES:
            assert client.post(URL, json=body).status_code == 422
        for _, key in REFUSED_KEYS:
            assert put(client, key, {"v": 1}).status_code == 422
            if key:
                assert client.get(url(key)).status_code == 422
                assert client.delete(url(key)).status_code == 422
        assert put(client, "big", big_value(MAX_VALUE + 1)).status_code == 422
        assert post_raw(client, b'{"key": "\\ud800", "value": {"a": 1}, "expire": 1}').status_code == 422
        assert post_raw(client, b'{"key": "k", "value": {"a": "\\udfff"}, "expire": 1}').status_code == 422
        assert post_raw(client, b"{").status_code == 400
        assert post_raw(client, b"null").status_code == 422
        assert post_raw(client, "{}", "text/plain").status_code == 415
        assert post_raw(client, " " * (3 * MAX_VALUE)).status_code == 413
        assert set(command_stats(probe)) <= {"config|resetstat", "config", "info"}
        assert probe.dbsize() == 0
        # The same probe sees a valid request's commands: it can fail.
        assert put(client, "ok", {"v": 1}).status_code == 201
        assert command_stats(probe).get("set") == 1
    finally:
        probe.close()


def test_cache_redis_down_answers_503_and_readyz_says_so(settings: Settings, tmp_path: Path) -> None:
    server = start_redis(tmp_path / "doomed")
    app = create_app({"TESTING": True, **asdict(settings), "cache_redis_url": server.url})
    try:
        client = app.test_client()
        assert put(client, "k", {"v": 1}).status_code == 201
        server.kill()
        for response in (put(client, "k", {"v": 1}), client.get(url("k")), client.delete(url("k"))):
            error = assert_error(response, 503, "unavailable")
            assert "retry" in error["message"]
            assert response.headers["Retry-After"] == "1"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["cache_redis"].startswith("unavailable")
        assert ready.get_json()["checks"]["redis"] == "ok"
        # Bad input is still refused first: validation needs no Redis.
        assert put(client, "", {"v": 1}).status_code == 422
        server.restart()
        assert put(client, "k", {"v": 2}).status_code == 201
        assert client.get(url("k")).get_json()["value"] == {"v": 2}
    finally:
        close_app(app)
        server.kill()
