"""The cache API's input edges: keys (unicode, spaces, slashes, edge bytes), bodies (400, 413,
415, 422), generated keys and values."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import create_app
from producer.cache import KEY_MAX_BYTES
from shared.constants import DEFAULT_MAX_BODY_BYTES
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
from tests.servers import close_app

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
    app = create_app({"TESTING": True, **asdict(settings), "cache_max_value_bytes": 100})
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
