"""Direct views: plain ``POST /queue/members`` without Flask's cycle, Flask's answer for everything else."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest
import redis
from flask import Flask, request
from flask.signals import request_started
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer
from werkzeug.test import TestResponse

from producer import create_app, members
from producer.direct import DirectView, register_direct
from producer.exceptions import BackendUnavailable
from shared.constants import MEMBER_QUEUE
from shared.settings import Settings
from tests.servers import close_app

MEMBER = {"name": "Kim", "age": 30, "email": "kim@example.com"}
TOKEN = "t0ken"


@pytest.fixture
def flask_answers(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests Flask's own cycle answered (``full_dispatch_request``)."""
    return count_flask(app, monkeypatch)


def count_flask(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    dispatch = app.full_dispatch_request

    def counted() -> Any:
        seen.append(request.full_path.rstrip("?"))
        return dispatch()

    monkeypatch.setattr(app, "full_dispatch_request", counted)
    return seen


def post(client: FlaskClient, body: Any = MEMBER, **kwargs: Any) -> TestResponse:
    return client.post("/queue/members", json=body, **kwargs)


def queued(r: redis.Redis) -> list[str]:
    return Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer).job_ids


def test_after_the_first_request_plain_posts_skip_flasks_cycle(
    client: FlaskClient, flask_answers: list[str], r: redis.Redis
) -> None:
    answers = [post(client, {"name": f"m{i}", "age": i}) for i in range(4)]
    assert [a.status_code for a in answers] == [202] * 4
    # The first request of a process is Flask's: only then are its hooks and rules settled.
    assert flask_answers == ["/queue/members"]
    assert queued(r) == [a.get_json()["jobId"] for a in answers]


def test_the_direct_answer_and_job_are_flasks(
    client: FlaskClient, flask_answers: list[str], r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"User-Agent": "probe/1.0"}
    with caplog.at_level(logging.INFO, logger="producer.access"):
        by_flask = post(client, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"})
        direct = post(client, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert flask_answers == ["/queue/members"]
    assert (by_flask.status, direct.status) == ("202 ACCEPTED", "202 ACCEPTED")
    assert list(direct.headers) == list(by_flask.headers)
    ids = [by_flask.get_json()["jobId"], direct.get_json()["jobId"]]
    assert direct.data == by_flask.data.replace(ids[0].encode(), ids[1].encode())
    jobs = [r.hgetall(f"rq:job:{job_id}") for job_id in ids]
    stamps = {b"created_at", b"enqueued_at"}
    assert jobs[0].keys() == jobs[1].keys() and stamps <= jobs[0].keys()
    assert {k: v for k, v in jobs[0].items() if k not in stamps} == {
        k: v for k, v in jobs[1].items() if k not in stamps
    }
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "producer.access"]
    shape = re.compile(r'10\.0\.0\.1 - "POST /queue/members" 202 [\d.]+ms "probe/1\.0"')
    assert len(lines) == 2 and all(shape.fullmatch(line) for line in lines), lines


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"name": "", "age": 1}}, 422, "validation_error"),
        ({"json": {"name": "x", "age": "1"}}, 422, "validation_error"),  # strict: no coercion
        ({"json": ["not", "an", "object"]}, 422, "validation_error"),
        ({"data": b"{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b'{"name": "x", "age": NaN}', "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"\xff\xfe{", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b'{"name": "x", "age": 1}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"{" + b" " * 300_000 + b"}", "content_type": "application/json"}, 413, None),
    ],
)
def test_a_request_the_direct_view_declines_gets_flasks_error(
    client: FlaskClient,
    flask_answers: list[str],
    r: redis.Redis,
    kwargs: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    assert post(client).status_code == 202  # Flask's first request
    answer = client.post("/queue/members", **kwargs)
    assert answer.status_code == status
    assert answer.is_json and "error" in answer.get_json()
    if code is not None:
        assert answer.get_json()["error"]["code"] == code
    assert len(flask_answers) == 2
    assert len(queued(r)) == 1


def test_flask_reads_the_body_the_direct_view_put_back(client: FlaskClient, flask_answers: list[str]) -> None:
    post(client)
    answer = post(client, {"name": "x", "age": 1, "extra": True})
    # Flask's path validated the same body: it names the field only the body had.
    assert answer.status_code == 422
    assert [f["field"] for f in answer.get_json()["error"]["fields"]] == ["extra"]
    assert len(flask_answers) == 2


def test_a_query_string_or_a_chunked_body_goes_through_flask(
    client: FlaskClient, flask_answers: list[str], r: redis.Redis
) -> None:
    post(client)
    routed = client.post("/queue/members?routing_key=k1", json=MEMBER)
    chunked = client.post(
        "/queue/members",
        input_stream=io.BytesIO(b'{"name": "c", "age": 2}'),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert (routed.status_code, chunked.status_code) == (202, 202)
    assert flask_answers == ["/queue/members", "/queue/members?routing_key=k1", "/queue/members"]
    assert len(queued(r)) == 3


def test_a_body_shorter_than_its_length_is_flasks_400(
    client: FlaskClient, flask_answers: list[str], r: redis.Redis
) -> None:
    post(client)
    short = client.post(
        "/queue/members",
        data=b'{"name": "a", "age": 3}',
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "500"},
    )
    assert short.status_code == 400 and "error" in short.get_json()
    assert len(flask_answers) == 2 and len(queued(r)) == 1


def test_an_error_of_the_write_is_answered_by_the_apps_handlers(
    client: FlaskClient,
    flask_answers: list[str],
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    post(client)
    calls: list[str] = []

    def unavailable(*args: Any, **kwargs: Any) -> str:
        calls.append(args[-1]["name"])
        raise BackendUnavailable("Redis is unreachable; retry later", headers={"Retry-After": "1"})

    monkeypatch.setattr(members, "enqueue", unavailable)
    with caplog.at_level(logging.INFO, logger="producer.access"):
        answer = post(client)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.get_json()["error"]["code"] == "unavailable"
    # Written once: Flask's path raised the direct view's error instead of running the view again.
    assert calls == ["Kim"] and len(flask_answers) == 2
    [line] = [rec for rec in caplog.records if rec.name == "producer.access"]
    assert line.levelno == logging.ERROR and " 503 " in line.getMessage()


def test_an_unexpected_error_is_flasks_500_with_the_traceback_logged(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    post(client)

    def broken(*args: Any, **kwargs: Any) -> str:
        raise KeyError("boom")

    monkeypatch.setattr(members, "enqueue", broken)
    answer = post(client)
    assert answer.status_code == 500 and answer.get_json()["error"]["code"] == "internal_error"
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is KeyError]
    assert logged and "broken" in caplog.text


@pytest.mark.parametrize(
    "kind", ["before_request", "after_request", "teardown_request", "teardown_appcontext"]
)
def test_a_hook_without_a_twin_runs_on_every_request(settings: Settings, r: redis.Redis, kind: str) -> None:
    app = create_app({"TESTING": True, **asdict(settings)})
    seen: list[str] = []

    def hook(*args: Any) -> Any:
        seen.append(kind)
        return args[0] if kind == "after_request" else None

    getattr(app, kind)(hook)
    try:
        client = app.test_client()
        assert [post(client).status_code for _ in range(3)] == [202] * 3
        assert seen == [kind] * 3
        assert app.direct_views["/queue/members"].usable is False  # type: ignore[attr-defined]
    finally:
        close_app(app)


def test_a_receiver_of_flasks_signals_sees_every_request(
    client: FlaskClient, flask_answers: list[str]
) -> None:
    post(client)
    started: list[Any] = []

    def receiver(sender: Flask, **extra: Any) -> None:
        started.append(sender)

    request_started.connect(receiver)
    try:
        assert [post(client).status_code for _ in range(2)] == [202, 202]
    finally:
        request_started.disconnect(receiver)
    assert len(started) == 2 and len(flask_answers) == 3
    post(client)
    assert len(flask_answers) == 3


def test_a_kept_request_context_is_flasks(client: FlaskClient, flask_answers: list[str]) -> None:
    post(client)
    with client:
        answer = post(client)
        assert request.path == "/queue/members" and answer.status_code == 202
    assert len(flask_answers) == 2


@pytest.fixture
def secured(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FlaskClient, list[str]]]:
    app = create_app({"TESTING": True, **asdict(settings), "api_token": TOKEN})
    yield app.test_client(), count_flask(app, monkeypatch)
    close_app(app)


def test_the_token_is_checked_directly(secured: tuple[FlaskClient, list[str]], r: redis.Redis) -> None:
    client, flask_answers = secured
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert post(client, headers=bearer).status_code == 202
    assert post(client, headers=bearer).status_code == 202
    assert len(flask_answers) == 1
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = post(client, headers=headers)
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    assert len(flask_answers) == 4 and len(queued(r)) == 2


def test_background_thread_starts_with_a_direct_first_answer(settings: Settings, r: redis.Redis) -> None:
    app = create_app({"TESTING": True, "BACKGROUND_THREAD": True, **asdict(settings)})
    try:
        client = app.test_client()
        post(client)
        background = app.extensions["redis_archive.background"]
        background.stop()
        background.pid = 0  # as in a new process after a fork: the next request starts it again
        assert post(client).status_code == 202
        assert background.running()
    finally:
        app.extensions["redis_archive.background"].stop()
        close_app(app)


@pytest.mark.parametrize(
    "endpoint",
    # A path variable, not a POST, a body limit of its own.
    ["members.get_member", "health.healthz", "members.enqueue_members_bulk"],
)
def test_only_a_post_without_variables_under_the_apps_limit_can_be_direct(app: Flask, endpoint: str) -> None:
    handler: Callable[..., bytes] = members.accept_member
    with pytest.raises(ValueError, match="direct view needs"):
        register_direct(app, endpoint, handler, 202)  # type: ignore[arg-type]
    assert isinstance(app.direct_views["/queue/members"], DirectView)  # type: ignore[attr-defined]
