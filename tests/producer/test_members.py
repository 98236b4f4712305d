"""POST /queue/members and reading members: validation, enqueue, nothing enqueued on bad input."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer

from shared.constants import CREATE_MEMBER_JOB, MEMBER_QUEUE


def queue_len(r: redis.Redis) -> int:
    return Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer).count


def test_enqueue_member_answers_202_with_job_id(client: FlaskClient, r: redis.Redis) -> None:
    response = client.post("/queue/members", json={"name": "Kim", "age": 30, "email": "kim@example.com"})
    assert response.status_code == 202
    job_id = response.get_json()["jobId"]
    # Byte for byte what jsonify answers.
    assert response.data == json.dumps({"jobId": job_id}, separators=(",", ":")).encode() + b"\n"
    assert response.mimetype == "application/json"
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    assert queue.job_ids == [job_id]
    job = queue.fetch_job(job_id)
    assert job is not None
    assert job.func_name == CREATE_MEMBER_JOB
    assert list(job.args) == [{"name": "Kim", "age": 30, "email": "kim@example.com"}]
    assert job.meta["name"] == "createMemberJob"
    assert job.retries_left == 2
    # No pickle crosses Redis: the stored job data is JSON (as it is: a small payload).
    raw = r.hget(f"rq:job:{job_id}", "data")
    assert raw is not None
    assert json.loads(raw)[0] == CREATE_MEMBER_JOB


def test_email_is_optional(client: FlaskClient, r: redis.Redis) -> None:
    response = client.post("/queue/members", json={"name": "Lee", "age": 0})
    assert response.status_code == 202
    assert queue_len(r) == 1


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("missing name", {"age": 3}, "name"),
    ("missing age", {"name": "a"}, "age"),
    ("empty name", {"name": "", "age": 3}, "name"),
    ("blank name", {"name": "   ", "age": 3}, "name"),
    ("name too long", {"name": "x" * 101, "age": 3}, "name"),
    ("control char in name", {"name": "a\x00b", "age": 3}, "name"),
    ("name not a string", {"name": 12, "age": 3}, "name"),
    ("age as string", {"name": "a", "age": "3"}, "age"),
    ("age as float", {"name": "a", "age": 3.5}, "age"),
    ("age as bool", {"name": "a", "age": True}, "age"),
    ("age negative", {"name": "a", "age": -1}, "age"),
    ("age too large", {"name": "a", "age": 151}, "age"),
    ("age null", {"name": "a", "age": None}, "age"),
    ("bad email", {"name": "a", "age": 3, "email": "not-an-email"}, "email"),
    ("email not a string", {"name": "a", "age": 3, "email": 5}, "email"),
    ("unknown field", {"name": "a", "age": 3, "role": "admin"}, "role"),
    ("array body", [{"name": "a", "age": 3}], "body"),
    ("string body", "hello", "body"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_member_is_refused_with_422_naming_the_field(
    client: FlaskClient, r: redis.Redis, case: str, body: Any, field: str
) -> None:
    client.post("/queue/members", json={"name": "ok", "age": 1})
    before = queue_len(r)
    response = client.post("/queue/members", json=body)
    assert response.status_code == 422, case
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in [f["field"] for f in error["fields"]]
    assert field in error["message"]
    assert queue_len(r) == before == 1


def test_non_json_body_is_400(client: FlaskClient, r: redis.Redis) -> None:
    response = client.post("/queue/members", data="{name: 1", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert queue_len(r) == 0


@pytest.mark.parametrize("raw", ["NaN", '{"name": "a", "age": Infinity}', "", "\xff"])
def test_non_standard_json_is_400(client: FlaskClient, r: redis.Redis, raw: str) -> None:
    response = client.post("/queue/members", data=raw.encode("latin-1"), content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert queue_len(r) == 0


def test_wrong_content_type_is_415(client: FlaskClient, r: redis.Redis) -> None:
    response = client.post(
        "/queue/members", data="name=a&age=3", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert queue_len(r) == 0


def test_oversized_body_is_413(client: FlaskClient, r: redis.Redis) -> None:
    body = json.dumps({"name": "a", "age": 3, "email": "x" * 70_000})
    response = client.post("/queue/members", data=body, content_type="application/json")
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "request_entity_too_large"
    assert "65536" in error["message"]
    assert queue_len(r) == 0


def test_body_limit_is_configurable(settings: Any, r: redis.Redis) -> None:
    from producer import create_app

    app = create_app({**asdict(settings), "max_body_bytes": 100})
    response = app.test_client().post("/queue/members", json={"name": "a" * 99, "age": 3})
    assert response.status_code == 413
    assert queue_len(r) == 0


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    response = client.get("/queue/members")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_unknown_member_is_404(client: FlaskClient) -> None:
    response = client.get("/members/12345")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=x", "after_id=-1", "job_id=a%20b", "colour=red"]
)
def test_bad_member_query_is_422(client: FlaskClient, query: str) -> None:
    response = client.get(f"/members?{query}")
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"]


def _chunked(client: FlaskClient, body: bytes) -> Any:
    """POST ``body`` as a server hands over a chunked request: no Content-Length, input terminated."""
    return client.post(
        "/queue/members",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_400(
    client: FlaskClient, r: redis.Redis
) -> None:
    oversized = json.dumps({"name": "a", "age": 3, "email": "x" * 70_000}).encode()
    response = _chunked(client, oversized)
    assert response.status_code == 413, response.get_json()
    assert response.get_json()["error"]["code"] == "request_entity_too_large"
    # Exactly at the limit is not over it; a small chunked body is enqueued.
    at_limit = b'{"name": "a", "age": 3}'.ljust(65536, b" ")
    assert _chunked(client, at_limit).status_code == 202
    assert _chunked(client, b'{"name": "b", "age": 4}').status_code == 202
    assert queue_len(r) == 2


def test_a_body_shorter_than_its_content_length_is_400_not_500(client: FlaskClient, r: redis.Redis) -> None:
    response = client.post(
        "/queue/members",
        data=b'{"name": "a", "age": 3}',
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "500"},
    )
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert queue_len(r) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=utf-8", b'{"name": "a", "age": 3}'),
        ("Application/JSON", b'{"name": "a", "age": 3}'),
        ("application/json", '\ufeff{"name": "a", "age": 3}'.encode()),
        ("application/json", '{"name": "a", "age": 3}'.encode("utf-16")),
    ],
)
def test_json_bodies_as_json_loads_reads_them(
    client: FlaskClient, r: redis.Redis, content_type: str, body: bytes
) -> None:
    response = client.post("/queue/members", data=body, content_type=content_type)
    assert response.status_code == 202
    assert queue_len(r) == 1


def test_a_routing_key_in_the_query_is_still_validated(client: FlaskClient, r: redis.Redis) -> None:
    assert client.post("/queue/members?routing_key=", json={"name": "a", "age": 3}).status_code == 422
    assert client.post("/queue/members?routing_key=k", json={"name": "a", "age": 3}).status_code == 202
    assert queue_len(r) == 1
