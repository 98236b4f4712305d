"""The cache API against a real redis-server: every status code, TTLs, key and value edge cases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import create_app
from producer.cache import EXPIRE_MAX_MS, KEY_MAX_BYTES
from shared.constants import CACHE_PREFIX, DEFAULT_MAX_BODY_BYTES
from shared.settings import Settings
from tests.servers import RedisProc, close_app, start_redis

URL = "/api/v1/redis"
MAX_VALUE = 512 * 1024


def url(key: str) -> str:
    """The URL of ``key``: every byte of its UTF-8 percent-encoded, slashes included."""
    return f"{URL}/{quote(key, safe='')}"


def put(client: FlaskClient, key: str, value: Any, expire: int = 60_000, **extra: Any) -> Any:
    return client.post(URL, json={"key": key, "value": value, "expire": expire, **extra})


def post_raw(client: FlaskClient, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.post(URL, data=body, content_type=content_type)


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error: dict[str, Any] = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert field in [f["field"] for f in error["fields"]], error
    return error


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


# --- keys: unicode, spaces, slashes, edge bytes -------------------------------------------------

ROUND_TRIP_KEYS = [
    "plain",
    "with space",
    " leading and trailing ",
    "a/b",
    "a/b/c/",
    "/leading-slash",
    "/",
    "//",
    "a//b",
    "..",
    ".",
    "a/../b",
    "query?x=1&y=2#frag",
    "percent%20literal",
    "tab-free\u00a0nbsp",
    "ünïcödé",
    "日本語のキー",
    "emoji 🗝️🔑",
    "\u200b zero width and \u202e bidi",
    "\ufffd",
    "\U0010fffd",
    "a" * KEY_MAX_BYTES,
    "é" * (KEY_MAX_BYTES // 2),
    "🔑" * (KEY_MAX_BYTES // 4),
    "x" + "語" * ((KEY_MAX_BYTES - 2) // 3) + "y",
]


@pytest.mark.parametrize("key", ROUND_TRIP_KEYS, ids=range(len(ROUND_TRIP_KEYS)))
def test_printable_keys_round_trip_through_the_url(client: FlaskClient, r: redis.Redis, key: str) -> None:
    assert len(key.encode()) <= KEY_MAX_BYTES
    value = {"key": key, "n": 1}
    assert put(client, key, value).status_code == 201
    assert r.get((CACHE_PREFIX + key).encode()) is not None
    response = client.get(url(key))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["key"] == key
    assert response.get_json()["value"] == value
    assert client.delete(url(key)).status_code == 200
    assert r.dbsize() == 0


def test_slashes_in_the_url_are_part_of_the_key_unencoded(client: FlaskClient) -> None:
    put(client, "a/b", {"v": "ab"})
    put(client, "/a", {"v": "slash-a"})
    put(client, "a//b", {"v": "double"})
    assert client.get(f"{URL}/a/b").get_json()["value"] == {"v": "ab"}
    assert client.get(f"{URL}//a").get_json()["value"] == {"v": "slash-a"}
    assert client.get(f"{URL}/a//b").get_json()["value"] == {"v": "double"}
    assert_error(client.get(f"{URL}/a"), 404, "not_found")


REFUSED_KEYS = [
    ("empty", ""),
    ("nul", "\x00"),
    ("nul inside", "a\x00b"),
    ("soh", "\x01"),
    ("tab", "a\tb"),
    ("newline", "line\nbreak"),
    ("unit separator", "\x1f"),
    ("del", "\x7f"),
    ("c1 first", "\x80"),
    ("c1 last", "a\x9f"),
    ("513 ascii bytes", "a" * (KEY_MAX_BYTES + 1)),
    ("513 bytes of 2-byte chars", "é" * 256 + "a"),
    ("513 bytes of 3-byte chars", "語" * 171),
    ("516 bytes of 4-byte chars", "🔑" * 129),
]


@pytest.mark.parametrize(("case", "key"), REFUSED_KEYS, ids=[c[0] for c in REFUSED_KEYS])
def test_bad_keys_are_refused_with_422_in_body_and_url(
    client: FlaskClient, r: redis.Redis, case: str, key: str
) -> None:
    assert_error(put(client, key, {"v": 1}), 422, "validation_error", "key")
    if key:
        assert_error(client.get(url(key)), 422, "validation_error", "key")
        assert_error(client.delete(url(key)), 422, "validation_error", "key")
    assert r.dbsize() == 0


def test_lone_surrogates_are_refused_in_keys_and_values(client: FlaskClient, r: redis.Redis) -> None:
    for body in (
        b'{"key": "\\ud800", "value": {"a": 1}, "expire": 1000}',
        b'{"key": "a\\udfffb", "value": {"a": 1}, "expire": 1000}',
    ):
        assert_error(post_raw(client, body), 422, "validation_error", "key")
    for body in (
        b'{"key": "k", "value": {"a": "\\ud800"}, "expire": 1000}',
        b'{"key": "k", "value": {"\\udc00": 1}, "expire": 1000}',
        b'{"key": "k", "value": {"a": [{"b": "x\\ud83d"}]}, "expire": 1000}',
    ):
        assert_error(post_raw(client, body), 422, "validation_error", "value")
    # A correctly paired surrogate escape is just an emoji.
    ok = b'{"key": "\\ud83d\\udd11", "value": {"a": "\\ud83d\\ude00"}, "expire": 1000}'
    assert post_raw(client, ok).status_code == 201
    assert client.get(url("🔑")).get_json()["value"] == {"a": "😀"}
    assert r.dbsize() == 1


def test_numbers_out_of_range_are_refused(client: FlaskClient, r: redis.Redis) -> None:
    infinite_value = '{"key": "k", "value": {"a": 1e400}, "expire": 1000}'
    error = assert_error(post_raw(client, infinite_value), 422, "validation_error", "value")
    assert "out of range" in error["message"]
    infinite_expire = '{"key": "k", "value": {"a": 1}, "expire": 1e400}'
    assert_error(post_raw(client, infinite_expire), 422, "validation_error", "expire")
    too_many_digits = '{"key": "k", "value": {"a": ' + "9" * 5000 + '}, "expire": 1}'
    assert_error(post_raw(client, too_many_digits), 400, "invalid_json")
    assert r.dbsize() == 0


def test_a_path_that_is_not_utf8_is_refused(client: FlaskClient) -> None:
    # PATH_INFO holds the raw bytes as latin-1 (PEP 3333); %FF decodes to the byte 0xFF.
    for method in ("GET", "DELETE"):
        response = client.open(
            f"{URL}/x", method=method, environ_overrides={"PATH_INFO": "/api/v1/redis/ab\xff"}
        )
        assert_error(response, 422, "validation_error", "key")


def test_values_with_edge_characters_round_trip(client: FlaskClient) -> None:
    value = {
        "nul": "\x00",
        "controls": "\x01\x1f\x7f\x80\x9f",
        "quotes": "\"'\\",
        "": "empty key",
        "unicode": "日本 🔑 \u2028\u2029",
        "numbers": [0, -1, 1.5e300, 2**63, -(2**63)],
        "deep": {"a": {"b": {"c": [[[]]]}}},
    }
    assert put(client, "edge", value).status_code == 201
    assert client.get(url("edge")).get_json()["value"] == value


def test_a_deeply_nested_value_round_trips(client: FlaskClient) -> None:
    depth = 900
    raw = '{"key": "deep", "expire": 60000, "value": {"a": ' + "[" * depth + "]" * depth + "}}"
    assert post_raw(client, raw).status_code == 201
    value = client.get(url("deep")).get_json()["value"]["a"]
    for _ in range(depth - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []


# --- 400, 413, 415, 422 ---------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, Any, str]] = [
    ("missing key", {"value": {"a": 1}, "expire": 10}, "key"),
    ("missing value", {"key": "k", "expire": 10}, "value"),
    ("missing expire", {"key": "k", "value": {"a": 1}}, "expire"),
    ("key not a string", {"key": 1, "value": {"a": 1}, "expire": 10}, "key"),
    ("key null", {"key": None, "value": {"a": 1}, "expire": 10}, "key"),
    ("empty value", {"key": "k", "value": {}, "expire": 10}, "value"),
    ("array value", {"key": "k", "value": [1], "expire": 10}, "value"),
    ("string value", {"key": "k", "value": "s", "expire": 10}, "value"),
    ("number value", {"key": "k", "value": 1, "expire": 10}, "value"),
    ("null value", {"key": "k", "value": None, "expire": 10}, "value"),
    ("expire zero", {"key": "k", "value": {"a": 1}, "expire": 0}, "expire"),
    ("expire negative", {"key": "k", "value": {"a": 1}, "expire": -5}, "expire"),
    ("expire over 30 days", {"key": "k", "value": {"a": 1}, "expire": EXPIRE_MAX_MS + 1}, "expire"),
    ("expire huge", {"key": "k", "value": {"a": 1}, "expire": 2**80}, "expire"),
    ("expire fraction", {"key": "k", "value": {"a": 1}, "expire": 10.5}, "expire"),
    ("expire huge float", {"key": "k", "value": {"a": 1}, "expire": 1e300}, "expire"),
    ("expire string", {"key": "k", "value": {"a": 1}, "expire": "10"}, "expire"),
    ("expire bool", {"key": "k", "value": {"a": 1}, "expire": True}, "expire"),
    ("nx string", {"key": "k", "value": {"a": 1}, "expire": 10, "nx": "true"}, "nx"),
    ("nx number", {"key": "k", "value": {"a": 1}, "expire": 10, "nx": 1}, "nx"),
    ("unknown field", {"key": "k", "value": {"a": 1}, "expire": 10, "ttl": 5}, "ttl"),
    ("array body", [{"key": "k", "value": {"a": 1}, "expire": 10}], "body"),
    ("string body", "k", "body"),
    ("number body", 1, "body"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies_are_refused_with_422_naming_the_field(
    client: FlaskClient, r: redis.Redis, case: str, body: Any, field: str
) -> None:
    assert_error(client.post(URL, json=body), 422, "validation_error", field)
    assert r.dbsize() == 0


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"key": "k", "value": {"a": NaN}, "expire": 1}', b"\xff\xfe", b"[" * 100_000],
    ids=["empty", "truncated", "text", "nan", "not utf-8", "deeply nested"],
)
def test_malformed_json_is_refused_with_400(client: FlaskClient, r: redis.Redis, raw: bytes) -> None:
    assert_error(post_raw(client, raw), 400, "invalid_json")
    assert r.dbsize() == 0


def test_wrong_content_type_is_refused_with_415(client: FlaskClient, r: redis.Redis) -> None:
    body = json.dumps({"key": "k", "value": {"a": 1}, "expire": 10})
    assert_error(post_raw(client, body, "text/plain"), 415, "unsupported_media_type")
    assert_error(client.post(URL, data={"key": "k"}), 415, "unsupported_media_type")
    assert r.dbsize() == 0


def big_value(size: int, char: str = "x") -> dict[str, str]:
    """A value whose compact UTF-8 JSON is exactly ``size`` bytes."""
    width = len(char.encode())
    overhead = len(b'{"v":""}')
    assert (size - overhead) % width == 0
    value = {"v": char * ((size - overhead) // width)}
    assert len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) == size
    return value


def test_a_value_at_the_size_limit_is_accepted_although_larger_than_the_body_limit(
    client: FlaskClient, r: redis.Redis
) -> None:
    assert MAX_VALUE > DEFAULT_MAX_BODY_BYTES
    response = put(client, "big", big_value(MAX_VALUE))
    assert response.status_code == 201
    assert len(r.get(CACHE_PREFIX + "big") or b"") == MAX_VALUE
    assert client.get(url("big")).get_json()["value"] == big_value(MAX_VALUE)
    # Sent with every non-ASCII character escaped (Python's default), it still fits.
    cjk = big_value(MAX_VALUE, "語")
    body = json.dumps({"key": "cjk", "value": cjk, "expire": 1000})
    assert len(body) > 2 * MAX_VALUE - 1000
    assert post_raw(client, body).status_code == 201


def test_a_value_over_the_size_limit_is_refused_with_422(client: FlaskClient, r: redis.Redis) -> None:
    error = assert_error(put(client, "big", big_value(MAX_VALUE + 1)), 422, "validation_error", "value")
    assert str(MAX_VALUE) in error["message"]
    assert r.dbsize() == 0


def test_bodies_over_the_limits_are_refused_with_413(client: FlaskClient, r: redis.Redis) -> None:
    cache_limit = 2 * MAX_VALUE + DEFAULT_MAX_BODY_BYTES
    padding = " " * (cache_limit + 1)
    error = assert_error(post_raw(client, padding), 413, "request_entity_too_large")
    assert str(cache_limit) in error["message"]
    # Other endpoints keep MAX_BODY_BYTES.
    member = json.dumps({"name": "n" * DEFAULT_MAX_BODY_BYTES, "age": 1})
    error = assert_error(
        client.post("/queue/members", data=member, content_type="application/json"),
        413,
        "request_entity_too_large",
    )
    assert str(DEFAULT_MAX_BODY_BYTES) in error["message"]
    assert r.dbsize() == 0


def test_cache_max_value_bytes_is_configurable(settings: Settings, r: redis.Redis) -> None:
    app = create_app({"TESTING": True, "SETTINGS": settings, "cache_max_value_bytes": 100})
    try:
        client = app.test_client()
        assert put(client, "k", big_value(100)).status_code == 201
        assert_error(put(client, "k2", big_value(101)), 422, "validation_error", "value")
        # The body limit follows: 2 x 100 + MAX_BODY_BYTES.
        padding = " " * (200 + DEFAULT_MAX_BODY_BYTES + 1)
        assert_error(post_raw(client, padding), 413, "request_entity_too_large")
    finally:
        close_app(app)


# --- property: keys and values from generators round-trip or are refused ------------------------

KEY_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=KEY_MAX_BYTES // 4)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    JSON_SCALARS | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(st.text(max_size=10), JSON_VALUES, min_size=1, max_size=5)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=KEY_TEXT, value=OBJECTS)
def test_generated_keys_and_values_round_trip(client: FlaskClient, key: str, value: dict[str, Any]) -> None:
    assert put(client, key, value).status_code == 201
    response = client.get(url(key))
    assert response.status_code == 200
    assert response.get_json()["key"] == key
    assert response.get_json()["value"] == value
    assert client.delete(url(key)).status_code == 200


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=st.text(min_size=0, max_size=200))
def test_any_key_round_trips_or_is_refused(client: FlaskClient, key: str) -> None:
    valid = 1 <= len(key.encode("utf-8", "surrogatepass")) <= KEY_MAX_BYTES and not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in key
    )
    body = json.dumps({"key": key, "value": {"k": key}, "expire": 60_000})
    response = post_raw(client, body)
    if valid:
        assert response.status_code == 201
        got = client.get(url(key))
        assert got.status_code == 200 and got.get_json()["value"] == {"k": key}
        assert client.delete(url(key)).status_code == 200
    else:
        assert_error(response, 422, "validation_error", "key")


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
    app = create_app({"TESTING": True, "SETTINGS": settings, "cache_redis_url": cache_redis.url})
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
    app = create_app({"TESTING": True, "SETTINGS": settings, "cache_redis_url": server.url})
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
