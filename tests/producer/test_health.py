"""/healthz (the process answers) and /readyz (Redis and the database answer, else 503)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import create_engine

from producer import create_app
from shared.settings import Settings
from tests.servers import close_app, start_redis


def test_healthz_answers_200(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {}}


def test_readyz_answers_200_when_redis_and_the_database_answer(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"redis": "ok", "database": "ok"}}


def test_readyz_answers_503_when_redis_is_down_and_recovers(settings: Settings, tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    app = create_app({"TESTING": True, **asdict(settings.with_overrides(redis_url=server.url))})
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        server.kill()
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "unavailable"
        assert body["checks"]["redis"].startswith("unavailable: ")
        assert body["checks"]["database"] == "ok"
        # Liveness does not depend on Redis.
        assert client.get("/healthz").status_code == 200
        server.restart()
        assert client.get("/readyz").status_code == 200
    finally:
        close_app(app)
        server.kill()


def test_readyz_answers_503_when_the_database_is_down(settings: Settings) -> None:
    app = create_app({"TESTING": True, **asdict(settings)})
    state = app.extensions["redis_archive"]
    working = state.engine
    # Nothing listens on port 1: connecting fails at once.
    state.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"] == {"redis": "ok", "database": "unavailable: OperationalError"}
    finally:
        state.engine.dispose()
        state.engine = working
        close_app(app)
