"""The dashboard: access control, rq-dashboard on RQ 3 with JSON jobs, actions, read-only, the Redis page."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer.enqueue import job_options
from shared.constants import (
    MEMBER_QUEUE,
)
from shared.settings import Settings
from shared.stack.local import Stack
from tests.producer.dashboard_support import AUTH, PASSWORD, TOKEN, basic, enqueue, make_app, work
from tests.servers import close_app, private_redis_proc

# This module's own redis-server: the commands it runs (each allocates a latency histogram in
# Redis 7) and the settings it changes stay out of the session's server.
redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)


# --- access -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/0/data/queues.json", "/dashboard/redis"])
def test_closed_without_password_or_token(settings: Settings, path: str) -> None:
    app = make_app(settings, dashboard_password=None, api_token=None)
    try:
        response = app.test_client().get(path, headers=AUTH)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "dashboard_closed"
        assert "DASHBOARD_PASSWORD" in response.get_json()["error"]["message"]
    finally:
        close_app(app)


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/redis", "/dashboard/static/css/main.css"])
def test_401_without_credentials(dash: FlaskClient, path: str) -> None:
    response = dash.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        basic("admin", "wrong"),
        basic("someone", PASSWORD),
        basic("admin", ""),
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Digest username=admin"},
    ],
)
def test_wrong_credentials_are_401(dash: FlaskClient, headers: dict[str, str]) -> None:
    assert dash.get("/dashboard/", headers=headers).status_code == 401


def test_password_opens_it(dash: FlaskClient) -> None:
    response = dash.get("/dashboard/", headers=AUTH)
    assert response.status_code == 200
    assert b"Redis Archive" in response.data
    assert b'href="/dashboard/redis"' in response.data


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, basic("anyone", TOKEN)], ids=["bearer", "basic"]
)
def test_api_token_opens_it(settings: Settings, headers: dict[str, str]) -> None:
    app = make_app(settings, dashboard_password=None, api_token=TOKEN)
    try:
        client = app.test_client()
        assert client.get("/dashboard/0/data/queues.json", headers=headers).status_code == 200
        assert client.get("/dashboard/redis", headers=headers).status_code == 200
        assert client.get("/dashboard/", headers=basic("admin", "nope")).status_code == 401
    finally:
        close_app(app)


def test_dashboard_is_not_in_the_openapi_document(dash: FlaskClient) -> None:
    paths = dash.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path.startswith("/dashboard")]


# --- rq-dashboard on RQ 3 with JSON jobs --------------------------------------------------------


def test_queue_counts_per_registry(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    for i in range(2):
        enqueue(r, settings, {"name": f"done{i}", "age": 1})
    enqueue(r, settings, {"bad": True})
    work(r)
    for i in range(3):
        enqueue(r, settings, {"name": f"waiting{i}", "age": 1})
    queues = dash.get("/dashboard/0/data/queues.json", headers=AUTH).get_json()["queues"]
    member = next(q for q in queues if q["name"] == MEMBER_QUEUE)
    assert member["count"] == 3
    assert member["finished_job_registry_count"] == 2
    assert member["failed_job_registry_count"] == 1
    listed = dash.get("/dashboard/0/data/jobs/member/queued/8/asc/1.json", headers=AUTH).get_json()
    assert len(listed["jobs"]) == 3


def test_job_with_a_dependency_is_shown(dash: FlaskClient, r: redis.Redis, settings: Settings) -> None:
    # rq-dashboard 0.9 decodes dependency ids as bytes; RQ 3 returns str (a 500 before the fix).
    first = enqueue(r, settings, {"name": "a", "age": 1})
    second = enqueue(r, settings, {"name": "b", "age": 1}, depends_on=first)
    response = dash.get(f"/dashboard/0/data/job/{second.id}.json", headers=AUTH)
    assert response.status_code == 200
    data = response.get_json()
    assert data["depends_on"] == [first.id]
    assert data["depends_on_status"] == ["active"]
    assert data["status"] == "deferred"
    assert '"maxAttempts": 1' in data["metadata"]


@pytest.mark.parametrize("path", ["/dashboard/0/view/job/nope", "/dashboard/0/data/job/nope.json"])
def test_unknown_job_is_404(dash: FlaskClient, path: str) -> None:
    response = dash.get(path, headers=AUTH)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_only_instance_zero(dash: FlaskClient) -> None:
    assert dash.get("/dashboard/1/data/queues.json", headers=AUTH).status_code == 404


def test_workers_page_reads_a_busy_workers_json_job(
    dash: FlaskClient, r: redis.Redis, settings: Settings
) -> None:
    job = enqueue(r, settings, {"name": "busy", "age": 1})
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=r, serializer=JSONSerializer)
    worker.register_birth()
    try:
        worker.prepare_execution(job)
        workers = dash.get("/dashboard/0/data/workers.json", headers=AUTH).get_json()["workers"]
        assert [w["current_job"]["job_id"] for w in workers] == [job.id]
    finally:
        worker.register_death()


def test_requeue_delete_and_empty(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(r, settings, {"bad": True})
    work(r)
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    assert queue.failed_job_registry.get_job_ids() == [failed.id]

    response = dash.post(f"/dashboard/job/{failed.id}/requeue", headers=AUTH)
    assert response.get_json() == {"status": "OK"}
    assert queue.get_job_ids() == [failed.id]
    assert Job.fetch(failed.id, connection=r, serializer=JSONSerializer).get_status() == JobStatus.QUEUED

    work(r)  # fails again
    response = dash.post("/dashboard/requeue/member", headers=AUTH)
    assert response.get_json() == {"status": "OK", "count": 1}
    assert queue.get_job_ids() == [failed.id]

    response = dash.post(f"/dashboard/job/{failed.id}/delete", headers=AUTH)
    assert response.get_json() == {"status": "OK"}
    assert not r.exists(Job.key_for(failed.id))
    assert queue.count == 0

    for i in range(4):
        enqueue(r, settings, {"name": f"n{i}", "age": 1})
    assert dash.post("/dashboard/queue/member/queued/empty", headers=AUTH).get_json()["count"] == 4
    assert queue.count == 0

    enqueue(r, settings, {"bad": True})
    work(r)
    assert dash.post("/dashboard/queue/member/failed/empty", headers=AUTH).get_json()["count"] == 1
    assert queue.failed_job_registry.count == 0


def test_requeue_gives_a_failed_job_its_attempts_back(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(
        r, settings, {"bad": True}, **job_options(settings.with_overrides(retry_intervals=(0,)), "x")
    )
    work(r)
    failed.refresh()
    assert failed.get_status() == JobStatus.FAILED and failed.retries_left == 0
    assert dash.post(f"/dashboard/job/{failed.id}/requeue", headers=AUTH).get_json() == {"status": "OK"}
    failed.refresh()
    assert failed.get_status() == JobStatus.QUEUED
    assert failed.retries_left == settings.job_attempts - 1


def test_mutations_need_post_from_the_same_origin(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(r, settings, {"bad": True})
    work(r)
    response = dash.get("/dashboard/requeue/member", headers=AUTH)
    assert response.status_code == 405
    response = dash.post(
        f"/dashboard/job/{failed.id}/delete", headers={**AUTH, "Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "cross_origin"
    assert r.exists(Job.key_for(failed.id))
    same = dash.post(f"/dashboard/job/{failed.id}/delete", headers={**AUTH, "Origin": "http://localhost"})
    assert same.get_json() == {"status": "OK"}


def test_read_only_hides_and_refuses_actions(settings: Settings, r: redis.Redis, worker_env: Any) -> None:
    app = make_app(settings, dashboard_password=PASSWORD, dashboard_read_only=True)
    try:
        client = app.test_client()
        failed = enqueue(r, settings, {"bad": True})
        work(r)
        waiting = enqueue(r, settings, {"name": "w", "age": 1})
        for path in (
            f"/dashboard/job/{failed.id}/requeue",
            f"/dashboard/job/{failed.id}/delete",
            "/dashboard/requeue/member",
            "/dashboard/queue/member/queued/empty",
            "/dashboard/queue/member/failed/empty",
            "/dashboard/queue/member/compact",
        ):
            response = client.post(path, headers=AUTH)
            assert response.status_code == 403, path
            assert response.get_json()["error"]["code"] == "read_only"
        queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
        assert queue.get_job_ids() == [waiting.id]
        assert queue.failed_job_registry.get_job_ids() == [failed.id]
        page = client.get("/dashboard/0/view/jobs/member/failed/8/asc/1", headers=AUTH).data.decode()
        assert 'id="read-only-badge"' in page
        assert "#requeue-all-btn" in page and "display: none !important" in page
        assert 'id="empty-btn"' not in page  # rq-dashboard's own switch drops delete and empty
    finally:
        close_app(app)


# --- redis-archive up ---------------------------------------------------------------------------


def test_up_generates_a_dashboard_password_when_none_is_set() -> None:
    stack = Stack(redis_url="redis://127.0.0.1:1/0", env={"PATH": "/usr/bin"})
    line = stack._dashboard_login()
    password = stack.env["DASHBOARD_PASSWORD"]
    assert len(password) >= 16
    assert f"password {password}" in line and "user admin" in line
    other = Stack(redis_url="redis://127.0.0.1:1/0", env={})
    other._dashboard_login()
    assert other.env["DASHBOARD_PASSWORD"] != password


def test_up_keeps_a_given_password() -> None:
    stack = Stack(
        redis_url="redis://127.0.0.1:1/0", env={"DASHBOARD_PASSWORD": "mine", "DASHBOARD_USER": "ops"}
    )
    line = stack._dashboard_login()
    assert stack.env["DASHBOARD_PASSWORD"] == "mine"
    assert "mine" not in line and "user ops" in line


def test_non_ascii_secrets(settings: Settings) -> None:
    token, password = "tökén-ü", "pässwörd"
    app = make_app(settings, dashboard_password=password, api_token=token)
    try:
        client = app.test_client()
        # Headers travel as bytes; WSGI hands them over as latin-1 text.
        as_sent = {"Authorization": "Bearer " + token.encode().decode("latin-1")}
        assert client.get("/dashboard/redis", headers=as_sent).status_code == 200
        assert client.get("/dashboard/redis", headers=basic("admin", password)).status_code == 200
        assert client.get("/dashboard/redis", headers=basic("admin", "passwort")).status_code == 401
    finally:
        close_app(app)


@pytest.mark.parametrize("outcome", ["queued", "finished", "failed"])
def test_a_job_not_written_as_json_shows_in_the_dashboard(
    dash: FlaskClient, r: redis.Redis, outcome: str
) -> None:
    """A job plain RQ enqueued with pickle: listed, its page and its data answer, nothing unpickled."""
    queue = Queue("elsewhere", connection=r)
    job = queue.enqueue("os.getcwd" if outcome != "failed" else "os.chdir", meta={"owner": "another app"})
    if outcome != "queued":
        SimpleWorker([queue], connection=r).work(burst=True)
    registry = outcome
    listing = dash.get(f"/dashboard/0/data/jobs/elsewhere/{registry}/8/asc/1.json", headers=AUTH)
    assert listing.status_code == 200, listing.get_data()
    assert [listed["id"] for listed in listing.get_json()["jobs"]] == [job.id]
    assert dash.get(f"/dashboard/0/view/job/{job.id}", headers=AUTH).status_code == 200
    data = dash.get(f"/dashboard/0/data/job/{job.id}.json", headers=AUTH)
    assert data.status_code == 200, data.get_data()
    info = data.get_json()
    assert info["status"] == outcome
    assert info["result"] is None
    assert info["description"] == job.description
    assert "not JSON" in info["metadata"]
    assert ("TypeError" in info["exc_info"]) if outcome == "failed" else info["exc_info"] is None
