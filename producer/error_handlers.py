"""One JSON error shape for every error, including Flask's own 404/405/413/415."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, request
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError
from werkzeug.exceptions import HTTPException

from shared.connections import UNAVAILABLE_ERRORS

from .exceptions import ApiError

logger = logging.getLogger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON error response in the shape of :class:`producer.schemas.ErrorBody`."""
    detail: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        detail["fields"] = fields
    response = jsonify({"error": detail})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # type: ignore[attr-defined]
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than {request.max_content_length} bytes"
        return error_response(status, _snake(exc.name), message, headers=headers)

    def _unavailable(exc: Exception) -> Response:
        logger.warning("backend unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(
            503, "unavailable", "Redis is unreachable; retry later", headers={"Retry-After": "1"}
        )

    for exc_class in UNAVAILABLE_ERRORS:
        app.register_error_handler(exc_class, _unavailable)

    @app.errorhandler(RedisOutOfMemoryError)
    def _out_of_memory(exc: RedisOutOfMemoryError) -> Response:
        # maxmemory reached under noeviction: Redis refused the write, so nothing was accepted.
        logger.error("Redis refused a write: out of memory (%s)", exc)
        return error_response(
            503,
            "out_of_memory",
            "Redis is out of memory (maxmemory reached); nothing was written; retry later",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(DatabaseOperationalError)
    def _database_unavailable(exc: DatabaseOperationalError) -> Response:
        logger.warning("database unavailable: %s", exc.orig)
        return error_response(
            503, "unavailable", "the database is unreachable; retry later", headers={"Retry-After": "1"}
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
