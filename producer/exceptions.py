"""Errors the producer turns into JSON responses."""

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


class NotFound(ApiError):
    """The addressed job, member, key or goods does not exist."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The request conflicts with the current state (key exists, stock too low)."""

    status = 409
    code = "conflict"


class ServiceUnavailable(ApiError):
    """Redis or the database cannot be reached right now; try again later."""

    status = 503
    code = "unavailable"
