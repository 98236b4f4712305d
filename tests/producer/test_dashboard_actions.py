"""Every dashboard route, on an empty queue and on one with a job in each registry: never a 500.

The routes come from the app's URL map, so a route added to rq-dashboard or to the Redis page
fails :func:`test_every_dashboard_route_is_driven` until a read below or an action test drives it.
Reads must answer the status the table says; actions must also change Redis as they claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from werkzeug.test import TestResponse

from producer.dashboard import URL_PREFIX
from shared.constants import CREATE_MEMBER_JOB, MEMBER_QUEUE
from shared.settings import Settings
from tests.producer.dashboard_support import AUTH, enqueue, work
from tests.servers import private_redis_proc

# This module's own redis-server, as the other dashboard modules have.
redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)

#: The queue itself and its registries, each holding one job in the ``full`` state.
REGISTRIES = ("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled")
STATES = ("empty", "full")
NO_QUEUE = "no-such-queue"
#: An id left in the queue whose job no longer exists: what compacting removes.
GONE = "gone-job"
#: Not job ids (those are letters, digits, ``_`` and ``-``); RQ reads ``job:execution`` as job ``job``.
BAD_IDS = ("bad.id", "job:execution")


# --- the two states -------------------------------------------------------------------------


def member_queue(r: redis.Redis) -> Queue:
    return Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)


def registry_ids(r: redis.Redis, name: str) -> list[str]:
    """The job ids of the member queue (``queued``) or of one of its registries."""
    queue = member_queue(r)
    if name == "queued":
        return queue.get_job_ids()
    return getattr(queue, f"{name}_job_registry").get_job_ids(cleanup=False)  # type: ignore[no-any-return]


def fill(r: redis.Redis, settings: Settings) -> dict[str, str]:
    """One job in the member queue and in each of its registries, plus a dead id in the queue."""
    queue = member_queue(r)
    ids = {
        "finished": enqueue(r, settings, {"name": "done", "age": 1}).id,
        "failed": enqueue(r, settings, {"bad": True}).id,
    }
    work(r)
    enqueue(r, settings, {"name": "running", "age": 1})
    worker = SimpleWorker([queue], connection=r, serializer=JSONSerializer)
    worker.register_birth()
    dequeued = Queue.dequeue_any([queue], None, connection=r, serializer=JSONSerializer)
    assert dequeued is not None
    running = dequeued[0]
    worker.prepare_execution(running)
    worker.prepare_job_execution(running)
    ids["started"] = running.id
    ids["queued"] = enqueue(r, settings, {"name": "waiting", "age": 1}).id
    ids["deferred"] = enqueue(r, settings, {"name": "later", "age": 1}, depends_on=ids["queued"]).id
    ids["scheduled"] = queue.enqueue_in(timedelta(hours=1), CREATE_MEMBER_JOB, {"name": "s", "age": 1}).id
    canceled = enqueue(r, settings, {"name": "never", "age": 1})
    canceled.cancel()
    ids["canceled"] = canceled.id
    queue.push_job_id(GONE)
    for name in REGISTRIES:
        expected = [ids[name], GONE] if name == "queued" else [ids[name]]
        assert registry_ids(r, name) == expected, name
    return ids


def empty(r: redis.Redis, settings: Settings) -> dict[str, str]:
    """The member queue known to RQ with no job anywhere; the ids name jobs that do not exist."""
    enqueue(r, settings, {"name": "gone", "age": 1})
    assert member_queue(r).empty() == 1
    assert all(registry_ids(r, name) == [] for name in REGISTRIES)
    return {name: f"no-{name}-job" for name in REGISTRIES}


@pytest.fixture(params=STATES)
def state(request: pytest.FixtureRequest, r: redis.Redis, settings: Settings, worker_env: Any) -> str:
    return str(request.param)


@pytest.fixture
def ids(state: str, r: redis.Redis, settings: Settings) -> dict[str, str]:
    return fill(r, settings) if state == "full" else empty(r, settings)


def existing(r: redis.Redis, ids: dict[str, str]) -> set[str]:
    """The registries whose job still exists."""
    return {name for name, job_id in ids.items() if Job.exists(job_id, connection=r)}


def jobs_snapshot(r: redis.Redis, ids: dict[str, str]) -> tuple[set[str], dict[str, list[str]]]:
    """Which jobs exist and where they are (the dead id aside: RQ drops it when it meets it)."""
    places = {name: [i for i in registry_ids(r, name) if i != GONE] for name in REGISTRIES}
    return existing(r, ids), places


# --- requests -------------------------------------------------------------------------------


def routed(app: Flask, method: str, path: str) -> str:
    """The endpoint the app's URL map sends ``method path`` to."""
    endpoint, _ = app.url_map.bind("localhost").match(path, method=method)
    return str(endpoint)


def error_of(response: TestResponse) -> dict[str, Any]:
    """The body of a 4xx, which must have the one JSON error shape."""
    body = response.get_json(silent=True)
    assert isinstance(body, dict) and set(body) == {"error"}, response.get_data(as_text=True)[:300]
    assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    return body["error"]  # type: ignore[no-any-return]


def call(client: FlaskClient, endpoint: str, method: str, path: str) -> TestResponse:
    """Send ``method path`` with credentials after checking it reaches ``endpoint``; never a 500."""
    assert routed(client.application, method, path) == endpoint, path
    response = client.open(path, method=method, headers=AUTH)
    response.get_data()
    response.close()  # static files are streamed from an open file until closed
    assert response.status_code < 500, f"{method} {path}: {response.get_data(as_text=True)[:300]}"
    if response.status_code >= 400:
        error_of(response)
    return response


# --- reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """A request that changes nothing, the status it gets in each state, and what a full page shows."""

    endpoint: str
    path: str
    empty: int = 200
    full: int = 200
    shows: str | None = None
    method: str = "GET"


def _listings() -> list[Read]:
    reads = []
    for queue in (MEMBER_QUEUE, NO_QUEUE):
        for name in REGISTRIES:
            shows = f"{{{name}}}" if queue == MEMBER_QUEUE else None
            for order in ("asc", "dsc"):
                reads.append(
                    Read(
                        "rq_dashboard.list_jobs", f"/0/data/jobs/{queue}/{name}/8/{order}/1.json", shows=shows
                    )
                )
            reads.append(Read("rq_dashboard.jobs_overview", f"/0/view/jobs/{queue}/{name}/8/asc/1"))
        for endpoint, base, suffix in (
            ("rq_dashboard.list_jobs", "/0/data/jobs", ".json"),
            ("rq_dashboard.jobs_overview", "/0/view/jobs", ""),
        ):
            reads.append(Read(endpoint, f"{base}/{queue}/no-such-registry/8/asc/1{suffix}", 404, 404))
            for tail in ("0/asc/1", "1001/asc/1", "8/asc/0", "8/asc/1000000000000000000000", "8/up/1"):
                reads.append(Read(endpoint, f"{base}/{queue}/queued/{tail}{suffix}", 400, 400))
        for tail in ("x/asc/1", "-1/asc/1", "8/asc/x"):
            reads.append(Read("rq_dashboard.list_jobs", f"/0/data/jobs/{queue}/queued/{tail}.json", 400, 400))
    return reads


def _jobs() -> list[Read]:
    reads = []
    for name in REGISTRIES:
        reads.append(Read("rq_dashboard.job_view", f"/0/view/job/{{{name}}}", 404, 200))
        reads.append(
            Read("rq_dashboard.job_info", f"/0/data/job/{{{name}}}.json", 404, 200, f'"status":"{name}"')
        )
    for bad in (GONE, *BAD_IDS):
        reads.append(Read("rq_dashboard.job_view", f"/0/view/job/{bad}", 404, 404))
        reads.append(Read("rq_dashboard.job_info", f"/0/data/job/{bad}.json", 404, 404))
    return reads


READS = [
    Read("rq_dashboard.queues_overview", "/"),
    Read("rq_dashboard.workers_overview", "/0/view/workers"),
    Read("rq_dashboard.jobs_overview", "/0/view/jobs"),
    Read("rq_dashboard.list_queues", "/0/data/queues.json", shows=f'"name":"{MEMBER_QUEUE}"'),
    Read("rq_dashboard.list_workers", "/0/data/workers.json", shows='"job_id":"{started}"'),
    Read("rq_dashboard.favicon", "/favicon.ico"),
    Read("rq_dashboard.static", "/static/css/main.css"),
    Read("rq_dashboard.static", "/static/no-such-file.css", 404, 404),
    Read("dashboard_redis.redis_page", "/redis", shows=f'data-queue="{MEMBER_QUEUE}"'),
    # A route for POST that the shipped blueprint also opened to GET: refused, changes nothing.
    Read("rq_dashboard.requeue_all", f"/requeue/{MEMBER_QUEUE}", 405, 405),
    *_listings(),
    *_jobs(),
]


@pytest.mark.parametrize("endpoint", sorted({read.endpoint for read in READS}))
def test_reads(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], endpoint: str) -> None:
    before = jobs_snapshot(r, ids)
    for read in (read for read in READS if read.endpoint == endpoint):
        path = URL_PREFIX + read.path.format(**ids)
        response = call(dash, read.endpoint, read.method, path)
        want = read.full if state == "full" else read.empty
        assert response.status_code == want, f"{path}: {response.status_code} {response.data[:200]!r}"
        if state == "full" and read.shows is not None:
            assert read.shows.format(**ids) in response.get_data(as_text=True), path
    assert jobs_snapshot(r, ids) == before, "a read changed a job"


# --- actions --------------------------------------------------------------------------------


def post(client: FlaskClient, endpoint: str, path: str) -> TestResponse:
    return call(client, f"rq_dashboard.{endpoint}", "POST", URL_PREFIX + path)


@pytest.mark.parametrize("queue", [MEMBER_QUEUE, NO_QUEUE])
def test_compact(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], queue: str) -> None:
    keys = r.dbsize()
    response = post(dash, "compact_queue", f"/queue/{queue}/compact")
    assert response.status_code == 200 and response.get_json() == {"status": "OK"}
    if state == "full" and queue == MEMBER_QUEUE:
        assert registry_ids(r, "queued") == [ids["queued"]]  # the dead id is gone, the job stays
    else:
        assert r.dbsize() == keys  # nothing to compact, and no key left behind
        assert registry_ids(r, "queued") == ([ids["queued"], GONE] if state == "full" else [])


@pytest.mark.parametrize("name", REGISTRIES)
def test_empty(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], name: str) -> None:
    before = existing(r, ids)
    response = post(dash, "empty_queue", f"/queue/{MEMBER_QUEUE}/{name}/empty")
    assert response.status_code == 200
    # The queue's list holds the waiting job and the dead id; each registry holds one job.
    emptied = (2 if name == "queued" else 1) if state == "full" else 0
    assert response.get_json() == {"status": "OK", "count": emptied}
    assert registry_ids(r, name) == []
    assert existing(r, ids) == before - {name}


def test_empty_unknown_queue_or_registry(dash: FlaskClient, r: redis.Redis, ids: dict[str, str]) -> None:
    keys = r.dbsize()
    for name in REGISTRIES:
        response = post(dash, "empty_queue", f"/queue/{NO_QUEUE}/{name}/empty")
        assert response.get_json() == {"status": "OK", "count": 0}
    response = post(dash, "empty_queue", f"/queue/{MEMBER_QUEUE}/no-such-registry/empty")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert r.dbsize() == keys


@pytest.mark.parametrize("name", REGISTRIES)
def test_delete(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], name: str) -> None:
    before = existing(r, ids)
    response = post(dash, "delete_job_view", f"/job/{ids[name]}/delete")
    if state == "empty":
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
        return
    assert response.status_code == 200 and response.get_json() == {"status": "OK"}
    assert ids[name] not in registry_ids(r, name)
    assert existing(r, ids) == before - {name}


@pytest.mark.parametrize("name", REGISTRIES)
def test_requeue_one(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], name: str) -> None:
    response = post(dash, "requeue_job_view", f"/job/{ids[name]}/requeue")
    if state == "empty":
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    elif name == "failed":
        assert response.status_code == 200 and response.get_json() == {"status": "OK"}
        assert registry_ids(r, "failed") == []
        assert ids["failed"] in registry_ids(r, "queued")
        assert (
            Job.fetch(ids["failed"], connection=r, serializer=JSONSerializer).get_status() == JobStatus.QUEUED
        )
    else:
        # Only a failed job goes back; the others stay where they are.
        assert response.status_code == 409
        error = error_of(response)
        assert error["code"] == "conflict" and f"is {name}" in error["message"], error
        assert ids[name] in registry_ids(r, name)


@pytest.mark.parametrize("queue", [MEMBER_QUEUE, NO_QUEUE])
def test_requeue_all(dash: FlaskClient, r: redis.Redis, state: str, ids: dict[str, str], queue: str) -> None:
    keys = r.dbsize()
    response = post(dash, "requeue_all", f"/requeue/{queue}")
    moved = 1 if state == "full" and queue == MEMBER_QUEUE else 0
    assert response.status_code == 200 and response.get_json() == {"status": "OK", "count": moved}
    if moved:
        assert registry_ids(r, "failed") == []
        assert ids["failed"] in registry_ids(r, "queued")
    else:
        assert r.dbsize() == keys


@pytest.mark.parametrize("job_id", [GONE, *BAD_IDS])
def test_actions_on_jobs_that_cannot_exist(
    dash: FlaskClient, r: redis.Redis, ids: dict[str, str], job_id: str
) -> None:
    keys = r.dbsize()
    for endpoint, verb in (("delete_job_view", "delete"), ("requeue_job_view", "requeue")):
        response = post(dash, endpoint, f"/job/{job_id}/{verb}")
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert r.dbsize() == keys


#: The routes that change data, and the tests above that drive them in both states.
ACTIONS: dict[tuple[str, str], Callable[..., None]] = {
    ("rq_dashboard.compact_queue", "POST"): test_compact,
    ("rq_dashboard.empty_queue", "POST"): test_empty,
    ("rq_dashboard.delete_job_view", "POST"): test_delete,
    ("rq_dashboard.requeue_job_view", "POST"): test_requeue_one,
    ("rq_dashboard.requeue_all", "POST"): test_requeue_all,
}


def test_every_dashboard_route_is_driven(dash: FlaskClient) -> None:
    app = dash.application
    served = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(URL_PREFIX)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    driven = {(read.endpoint, read.method) for read in READS} | set(ACTIONS)
    assert served - driven == set(), "dashboard routes no test drives: add them to READS or ACTIONS"
    assert driven - served == set(), "READS or ACTIONS name routes the dashboard no longer has"
    placeholders = {name: f"{name}-id" for name in REGISTRIES}
    for read in READS:
        assert routed(app, read.method, URL_PREFIX + read.path.format(**placeholders)) == read.endpoint
