"""The OpenAPI contract: every route documented, one error shape, and a fuzz run against it."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server

from producer import create_app
from producer.openapi import build_spec, undocumented_rules
from shared.settings import Settings
from tests.servers import RedisProc, close_app

#: Paths that are not part of the JSON API contract: the dashboard documents itself.
NOT_IN_CONTRACT = re.compile(r"^/dashboard(/|$)")
#: Requests the fuzz run sends across all operations (the floor is what the contract promises).
FUZZ_TARGET = 1200
FUZZ_FLOOR = 1000


def template(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?(\w+)>", r"{\1}", rule)


def test_every_route_is_documented(app: Flask, client: FlaskClient) -> None:
    missing = [r.rule for r in undocumented_rules(app) if not NOT_IN_CONTRACT.match(r.rule)]
    assert missing == [], f"declare these views with @operation(...): {missing}"
    spec = client.get("/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or NOT_IN_CONTRACT.match(rule.rule):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][template(rule.rule)], (method, rule.rule)


def test_undocumented_routes_are_reported(app: Flask) -> None:
    app.add_url_rule("/sneaky", "sneaky", lambda: "no docs")
    reported = [r.rule for r in undocumented_rules(app) if not NOT_IN_CONTRACT.match(r.rule)]
    assert reported == ["/sneaky"]
    assert "/sneaky" not in build_spec(app)["paths"]


def test_the_document_describes_errors_and_limits(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    responses = spec["components"]["responses"]
    assert responses["Error405"]["headers"]["Allow"]["required"] is True
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for name, response in responses.items():
        assert response["content"]["application/json"]["schema"] == error_ref, name
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            statuses = set(op["responses"])
            if "{" in path:
                assert "404" in statuses, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= statuses, (method, path)
                assert re.search(r"at most \d+ bytes", op["requestBody"]["description"])
    cache_body = spec["paths"]["/api/v1/redis"]["post"]["requestBody"]["description"]
    assert "at most 1114112 bytes" in cache_body
    member_body = spec["paths"]["/queue/members"]["post"]["requestBody"]["description"]
    assert "at most 65536 bytes" in member_body
    key = spec["paths"]["/api/v1/redis/{key}"]["get"]["parameters"][0]
    assert key["schema"]["maxLength"] == 512 and key["schema"]["pattern"]
    member_id = spec["paths"]["/members/{member_id}"]["get"]["parameters"][0]["schema"]
    assert member_id == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


FLASK_ERRORS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", "/no/such/path", {}, 404, "not_found"),
    ("GET", "/members/abc", {}, 404, "not_found"),
    ("GET", "/members/2147483648", {}, 404, "not_found"),
    ("GET", "/members//1", {}, 404, "not_found"),
    ("POST", "/queue//members", {}, 404, "not_found"),
    ("PUT", "/api/v1/redis", {}, 405, "method_not_allowed"),
    ("POST", "/healthz", {}, 405, "method_not_allowed"),
    ("PATCH", "/api/v1/redis/k", {}, 405, "method_not_allowed"),
    ("POST", "/queue/members", {"data": "x" * 70_000, "content_type": "application/json"}, 413,
     "request_entity_too_large"),
    ("POST", "/queue/members", {"data": "{}", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("POST", "/api/v1/redis", {"data": "{}", "content_type": "application/xml"}, 415,
     "unsupported_media_type"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), FLASK_ERRORS)
def test_flask_errors_have_the_one_json_shape(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = client.open(path, method=method, **kwargs)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    if status == 405:
        assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]


# --- fuzz -------------------------------------------------------------------------------------


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free port (threaded Werkzeug server); yield its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def live_url(redis_proc: RedisProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The producer served over real HTTP."""
    db = Path(tmp_path_factory.mktemp("fuzz-db")) / "archive.db"
    app = create_app(asdict(Settings(redis_url=redis_proc.url, database_url=f"sqlite:///{db}")))
    try:
        with serve(app) as url:
            yield url
    finally:
        close_app(app)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    session: requests.Session,
    statuses: Counter[int],
    headers: dict[str, str] | None = None,
) -> int:
    """Send up to ``examples`` generated requests to ``operation``; every response must conform."""
    sent = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal sent
        if headers:
            case.headers = {**(case.headers or {}), **headers}
        response = case.call(session=session, timeout=30)
        sent += 1
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Nothing to generate (no parameters, or no invalid value that can travel in a URL).
        pass
    return sent


def test_fuzz_every_operation_from_the_served_document(live_url: str, redis_proc: RedisProc) -> None:
    # Loaded at test time from the running app: endpoints added later are fuzzed too.
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    document = requests.get(f"{live_url}/openapi.json", timeout=30).json()
    declared = {f"{m.upper()} {p}" for p, methods in document["paths"].items() for m in methods}
    operations = [result.ok() for result in schema.get_all_operations()]
    # Schemathesis leaves out the document's own URL; it was fetched just above.
    assert {op.label for op in operations} == declared - {"GET /openapi.json"}
    runs = [(op, mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    examples = max(20, math.ceil(FUZZ_TARGET / len(runs)))
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    with requests.Session() as session:
        rounds = 0
        while rounds < 5:
            rounds += 1
            productive = []
            for op, mode in runs:
                count = fuzz_operation(op, mode, examples, session, statuses)
                sent[op.label] += count
                if count >= examples:
                    productive.append((op, mode))
            deficit = FUZZ_TARGET - sum(sent.values())
            if deficit <= 0 or not productive:
                break
            # Some operations have few distinct inputs: top up with those that have many.
            runs = productive
            examples = math.ceil(deficit / len(productive))
    print(f"fuzz: {sum(sent.values())} requests in {rounds} round(s): {dict(sent)}")
    print(f"fuzz: statuses {dict(statuses)}")
    assert sum(sent.values()) >= FUZZ_FLOOR
    assert all(sent[op.label] > 0 for op in operations)
    assert 500 not in statuses and {200, 201, 202, 404, 422} <= set(statuses)
    client = redis_proc.client()
    try:
        assert client.ping()
    finally:
        client.close()


def test_keys_over_real_http(live_url: str) -> None:
    import http.client
    from urllib.parse import quote, urlsplit

    key = "über/ ?#%/..//🔑"
    with requests.Session() as session:
        body = {"key": key, "value": {"k": 1}, "expire": 60_000}
        created = session.post(f"{live_url}/api/v1/redis", json=body)
        assert created.status_code == 201
        got = session.get(f"{live_url}/api/v1/redis/{quote(key, safe='')}")
        assert got.status_code == 200 and got.json()["key"] == key
        assert session.delete(f"{live_url}/api/v1/redis/{quote(key, safe='')}").status_code == 200
    # A percent-encoded byte sequence that is not UTF-8 is refused, not replaced.
    parts = urlsplit(live_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", "/api/v1/redis/ab%FF")
        response = conn.getresponse()
        assert response.status == 422
        assert b'"validation_error"' in response.read()
    finally:
        conn.close()


def test_fuzz_with_a_token_set(redis_proc: RedisProc, tmp_path: Path) -> None:
    token = "fuzz-token"
    settings_ = Settings(
        redis_url=redis_proc.url, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", api_token=token
    )
    app = create_app(asdict(settings_))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with serve(app) as url, requests.Session() as session:
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=auth)
            without: Counter[int] = Counter()
            with_token: Counter[int] = Counter()
            for result in schema.get_all_operations():
                op = result.ok()
                public = op.definition.raw.get("security") == []
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    fuzz_operation(op, mode, 10, session, without if not public else Counter())
                # Negative cases could have had only the token negated, which this pass repairs.
                fuzz_operation(op, GenerationMode.POSITIVE, 10, session, with_token, headers=auth)
            print(f"fuzz with a token set: without it {dict(without)}, with it {dict(with_token)}")
            assert set(without) == {401} and without[401] >= 100
            assert 401 not in with_token and {201, 202} <= set(with_token)
    finally:
        close_app(app)
