"""What the cache API's tests share: URLs of keys, requests, and the error body's checks."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask.testing import FlaskClient

from producer.cache import EXPIRE_MAX_MS, KEY_MAX_BYTES

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


def big_value(size: int, char: str = "x") -> dict[str, str]:
    """A value whose compact UTF-8 JSON is exactly ``size`` bytes."""
    width = len(char.encode())
    overhead = len(b'{"v":""}')
    assert (size - overhead) % width == 0
    value = {"v": char * ((size - overhead) // width)}
    assert len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) == size
    return value


#: Keys the API refuses (422), in a body and in the URL.
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

#: Bodies the API refuses (422), with the field the error names.
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
