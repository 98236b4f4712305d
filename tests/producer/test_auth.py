"""Optional bearer-token auth: API_TOKEN guards every endpoint but health, in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from producer import auth, create_app
from producer.openapi import operation
from shared.settings import Settings
from tests.servers import close_app

TOKEN = "s3cret-tökén"


@pytest.fixture
def secured(settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True, **asdict(settings), "api_token": TOKEN})
    yield app
    close_app(app)


def bearer(token: str = TOKEN) -> dict[str, str]:
    # Headers travel as bytes; WSGI hands them over as latin-1 text.
    return {"Authorization": "Bearer " + token.encode().decode("latin-1")}


def assert_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/redis", {"key": "k", "value": {"a": 1}, "expire": 1000}),
    ("GET", "/api/v1/redis/k", None),
    ("DELETE", "/api/v1/redis/k", None),
    ("POST", "/queue/members", {"name": "a", "age": 1}),
    ("GET", "/members", None),
    ("GET", "/members/1", None),
    ("GET", "/jobs/abc", None),
    ("GET", "/openapi.json", None),
    ("GET", "/no/such/path", None),
    ("PUT", "/api/v1/redis", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_every_endpoint_needs_the_token(
    secured: Flask, r: redis.Redis, method: str, path: str, body: Any
) -> None:
    client = secured.test_client()
    for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]), {"Authorization": TOKEN},
                    {"Authorization": "Basic " + TOKEN}, {"Authorization": "Bearer"}):  # fmt: skip
        assert_401(client.open(path, method=method, json=body, headers=headers))
    assert r.dbsize() == 0
    response = client.open(path, method=method, json=body, headers=bearer())
    assert response.status_code != 401


def test_the_right_token_works_and_the_scheme_is_case_insensitive(secured: Flask) -> None:
    client = secured.test_client()
    body = {"key": "k", "value": {"a": 1}, "expire": 10_000}
    assert client.post("/api/v1/redis", json=body, headers=bearer()).status_code == 201
    headers = {"Authorization": "bearer " + TOKEN.encode().decode("latin-1")}
    assert client.get("/api/v1/redis/k", headers=headers).get_json()["value"] == {"a": 1}


def test_bad_input_without_a_token_gets_401_before_anything_else(secured: Flask) -> None:
    client = secured.test_client()
    assert_401(client.post("/api/v1/redis", data="x" * 2_000_000, content_type="text/plain"))
    assert_401(client.post("/api/v1/redis", data="{", content_type="application/json"))


def test_health_needs_no_token(secured: Flask) -> None:
    client = secured.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_without_api_token_nothing_is_required(client: FlaskClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/api/v1/redis/k").status_code == 404


def test_the_dashboard_prefix_is_left_to_its_own_login(secured: Flask) -> None:
    client = secured.test_client()
    # Exempt from the bearer hook: the dashboard answers with its own basic-auth challenge.
    for path in ("/dashboard/", "/dashboard/redis"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get(path, headers=bearer()).status_code == 200
    assert_401(client.get("/dashboardx"))


def test_exempt_adds_prefixes_and_new_endpoints_are_covered(settings: Settings) -> None:
    app = create_app({"TESTING": True, **asdict(settings), "api_token": TOKEN})
    try:

        @app.get("/later")
        @operation("An endpoint added later", responses={200: "ok"})
        def later() -> dict[str, str]:
            return {"ok": "yes"}

        @app.get("/hooks/ping")
        @operation("Authenticates by other means", responses={200: "ok"})
        def ping() -> dict[str, str]:
            return {"ok": "yes"}

        auth.exempt(app, "/hooks/")
        client = app.test_client()
        assert_401(client.get("/later"))
        assert client.get("/later", headers=bearer()).get_json() == {"ok": "yes"}
        assert client.get("/hooks/ping").get_json() == {"ok": "yes"}
    finally:
        close_app(app)


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert auth.token_matches("Bearer abc", "abc")
    assert not auth.token_matches("Bearer abd", "abc")
    assert not auth.token_matches("Bearer ", "abc")
    assert calls == [(b"abc", b"abc"), (b"abd", b"abc"), (b"", b"abc")]
    assert not auth.token_matches(None, "abc")
    assert not auth.token_matches("Token abc", "abc")


def test_the_document_declares_the_scheme_when_a_token_is_set(secured: Flask) -> None:
    spec = secured.test_client().get("/openapi.json", headers=bearer()).get_json()
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert spec["security"] == [{"bearer": []}]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if path in ("/healthz", "/readyz"):
                assert op["security"] == [] and "401" not in op["responses"]
            else:
                assert "401" in op["responses"], (method, path)
