"""Errors the producer turns into JSON responses (:mod:`producer.error_handlers` answers them).

Named apart from werkzeug's ``NotFound``, ``Conflict`` and ``ServiceUnavailable`` (which Flask
raises itself), whose responses the same handlers give the same shape.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "fields"?}}`` with ``status``."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        fields: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.fields = fields
        self.headers = headers or {}


class ValidationFailed(ApiError):
    """The request body or query does not match the endpoint's model."""

    status = 422
    code = "validation_error"


class ResourceNotFound(ApiError):
    """The addressed job, member, key or goods does not exist."""

    status = 404
    code = "not_found"


class ResourceConflict(ApiError):
    """The request conflicts with the current state (key exists, stock too low)."""

    status = 409
    code = "conflict"


class BackendUnavailable(ApiError):
    """Redis, the database or the lock's nodes cannot serve the request right now; try again later."""

    status = 503
    code = "unavailable"
