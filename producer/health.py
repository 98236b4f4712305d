"""``/healthz`` (the process is up), ``/readyz`` (Redis and the database answer) and ``/openapi.json``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .openapi import build_spec, operation
from .schemas import Health
from .state import get_state

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation("Liveness: the process answers", responses={200: Health}, tags=("health",), public=True)
def healthz() -> dict[str, Any]:
    return {"status": "ok", "checks": {}}


@bp.get("/readyz")
@operation(
    "Readiness: Redis (the queue's and the cache's) and the database answer",
    responses={200: Health, 503: Health},
    tags=("health",),
    public=True,
)
def readyz() -> tuple[dict[str, Any], int]:
    state = get_state()
    checks: dict[str, str] = {}
    clients = {"redis": state.redis}
    if state.cache_redis is not state.redis:
        clients["cache_redis"] = state.cache_redis
    for name, client in clients.items():
        try:
            client.ping()
            checks[name] = "ok"
        except RedisError as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ok = all(value == "ok" for value in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


@bp.get("/openapi.json")
@operation(
    "This OpenAPI 3.1 document, generated from the models that validate requests",
    responses={200: "The OpenAPI document"},
    tags=("meta",),
)
def openapi_json() -> dict[str, Any]:
    state = get_state()
    return build_spec(current_app, auth=bool(state.settings.api_token))
