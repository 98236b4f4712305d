"""The cache API: ``POST /api/v1/redis``, ``GET`` and ``DELETE /api/v1/redis/<key>``.

Values are non-empty JSON objects stored as compact JSON text under
:data:`shared.keys.CACHE_PREFIX` in the cache's Redis (``CACHE_REDIS_URL``, else the
queue's), always with a TTL. Every key and value is validated before any command is sent.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState
from pydantic import AfterValidator, BaseModel, Field
from werkzeug.routing import PathConverter

from shared.keys import CACHE_PREFIX

from .exceptions import ResourceConflict, ResourceNotFound, ValidationFailed
from .openapi import operation
from .schemas import INTEGRAL, Strict
from .state import get_state

logger = logging.getLogger(__name__)

bp = Blueprint("cache", __name__, url_prefix="/api/v1/redis")

KEY_MAX_BYTES = 512
EXPIRE_MAX_MS = 30 * 24 * 3600 * 1000
#: Control characters (Unicode category Cc): C0, DEL and C1. Keys must hold none of them.
CONTROL_CHARS = "\\x00-\\x1f\\x7f-\\x9f"
KEY_PATTERN = f"^[^{CONTROL_CHARS}]+$"
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")

KEY_RULES = (
    f"1..{KEY_MAX_BYTES} bytes of UTF-8 text without control characters (U+0000-U+001F, "
    "U+007F-U+009F); spaces, slashes and any other Unicode are fine"
)


def check_key(value: str) -> str:
    """Accept ``value`` as a cache key or raise ``ValueError`` saying why not."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("key must be valid Unicode (no lone surrogates)") from None
    if size > KEY_MAX_BYTES:
        raise ValueError(f"key must be at most {KEY_MAX_BYTES} bytes in UTF-8, got {size}")
    if _CONTROL.search(value):
        raise ValueError("key must not contain control characters (U+0000-U+001F, U+007F-U+009F)")
    return value


CacheKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=KEY_MAX_BYTES,
        description=f"The cache key: {KEY_RULES}",
        json_schema_extra={"pattern": KEY_PATTERN},
    ),
    AfterValidator(check_key),
]


class CacheSet(Strict):
    """A value to cache."""

    key: CacheKey
    value: Annotated[
        dict[str, Any],
        Field(
            min_length=1,
            description="A non-empty JSON object, at most CACHE_MAX_VALUE_BYTES (default 524288) "
            "bytes as compact UTF-8 JSON; strings must be valid Unicode (no lone surrogates)",
        ),
    ]
    expire: Annotated[
        int,
        Field(ge=1, le=EXPIRE_MAX_MS, description="Time to live in milliseconds, 1 ms .. 30 days"),
        INTEGRAL,
    ]
    nx: bool = Field(False, description="Set only when the key is absent (else 409)")


class CacheKeyPath(Strict):
    """The key in the URL."""

    key: CacheKey


class CacheStored(BaseModel):
    """The value was stored."""

    key: str
    ttlMs: int


class CacheEntry(BaseModel):
    """A cached value and its remaining time to live."""

    key: str
    value: dict[str, Any]
    ttlMs: int = Field(ge=0)


class CacheDeleted(BaseModel):
    """The key was deleted."""

    key: str
    deleted: Literal[True]


class KeyConverter(PathConverter):
    """Like ``<path:...>`` but also matches a leading slash, so every key has a URL."""

    regex = "[\\s\\S]+"
    part_isolating = False


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["cachekey"] = KeyConverter


def body_limit() -> int:
    """The body limit of ``POST /api/v1/redis``: a value at the limit, escaped, plus the envelope."""
    settings = get_state().settings
    return 2 * settings.cache_max_value_bytes + settings.max_body_bytes


def serialise(value: dict[str, Any]) -> bytes:
    """``value`` as compact UTF-8 JSON, or :class:`ValidationFailed` naming ``value``."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except UnicodeEncodeError:
        message = "value must hold valid Unicode only (no lone surrogates)"
    except RecursionError:
        message = "value is nested too deeply"
    except ValueError:
        # json.loads turns 1e400 into inf; JSON has no infinities.
        message = "value holds a number out of range (numbers must fit a finite double)"
    raise ValidationFailed(message, fields=[{"field": "value", "message": message, "type": "value_error"}])


def _path_is_utf8() -> bool:
    """Whether the request path is valid UTF-8 once percent-decoded.

    Servers replace undecodable bytes with U+FFFD (Werkzeug's) or pass them on as latin-1
    (PEP 3333, gunicorn): check both the raw request URI and ``PATH_INFO``.
    """
    environ = request.environ
    candidates = [environ.get("PATH_INFO", "").encode("latin-1", "replace")]
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw_uri:
        raw_path = urlsplit(raw_uri).path if "://" in raw_uri else raw_uri.partition("?")[0]
        candidates.append(unquote_to_bytes(raw_path.encode("latin-1", "replace")))
    try:
        for data in candidates:
            data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _path_key(path: CacheKeyPath) -> str:
    """The validated key of the URL; the raw path must be valid UTF-8 too."""
    if not _path_is_utf8():
        message = "key must be valid UTF-8 (percent-encode each byte of its UTF-8 form)"
        fields = [{"field": "key", "message": message, "type": "value_error"}]
        raise ValidationFailed(message, fields=fields)
    return path.key


def redis_key(key: str) -> bytes:
    """Where ``key`` lives in Redis."""
    return (CACHE_PREFIX + key).encode("utf-8")


KEY_URL_NOTE = (
    "The key is the rest of the path, slashes included (`/api/v1/redis/a/b` is key `a/b`, "
    "`/api/v1/redis//a` is key `/a`); percent-encode the UTF-8 bytes of `%`, `?`, `#`, and of "
    "`.`/`..` segments that clients would otherwise normalise away."
)


@bp.post("")
@operation(
    "Cache a JSON object under a key with a TTL in milliseconds",
    body=CacheSet,
    responses={201: CacheStored, 409: None, 503: None},
    tags=("cache",),
    max_body=body_limit,
    description="`nx: true` stores only when the key is absent and answers 409 otherwise. "
    "The body limit is 2 x CACHE_MAX_VALUE_BYTES + MAX_BODY_BYTES, so a value at the limit "
    "fits even with every non-ASCII character escaped as `\\uXXXX`.",
)
def set_value(body: CacheSet) -> tuple[dict[str, Any], int]:
    data = serialise(body.value)
    limit = get_state().settings.cache_max_value_bytes
    if len(data) > limit:
        message = f"value is {len(data)} bytes as compact JSON; at most {limit} are allowed"
        raise ValidationFailed(message, fields=[{"field": "value", "message": message, "type": "too_long"}])
    stored = get_state().cache_redis.set(redis_key(body.key), data, px=body.expire, nx=body.nx)
    if not stored:
        raise ResourceConflict(f"key {body.key!r} already exists")
    logger.debug("cache set key=%r bytes=%d ttl_ms=%d", body.key, len(data), body.expire)
    return {"key": body.key, "ttlMs": body.expire}, 201


@bp.get("/<cachekey:key>", merge_slashes=False)
@operation(
    "A cached value and its remaining TTL",
    path=CacheKeyPath,
    responses={200: CacheEntry, 404: None, 503: None},
    tags=("cache",),
    description=KEY_URL_NOTE,
)
def get_value(path: CacheKeyPath) -> Response:
    key = _path_key(path)
    pipe = get_state().cache_redis.pipeline(transaction=True)
    pipe.get(redis_key(key))
    pipe.pttl(redis_key(key))
    raw, ttl = pipe.execute()
    if raw is None:
        raise ResourceNotFound(f"key {key!r} not found")
    # The stored text is compact JSON written by set_value: splice it in instead of parsing
    # and re-encoding up to CACHE_MAX_VALUE_BYTES (and any nesting the request parser took).
    body = b'{"key":%s,"value":%s,"ttlMs":%d}\n' % (json.dumps(key).encode(), raw, max(int(ttl), 0))
    return Response(body, mimetype="application/json")


@bp.delete("/<cachekey:key>", merge_slashes=False)
@operation(
    "Delete a cached value",
    path=CacheKeyPath,
    responses={200: CacheDeleted, 404: None, 503: None},
    tags=("cache",),
    description=KEY_URL_NOTE,
)
def delete_value(path: CacheKeyPath) -> dict[str, Any]:
    key = _path_key(path)
    if not get_state().cache_redis.delete(redis_key(key)):
        raise ResourceNotFound(f"key {key!r} not found")
    return {"key": key, "deleted": True}
