"""GET /jobs/<id>: statuses, timestamps, attempts, result, 404 for unknown ids."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from shared.constants import MEMBER_QUEUE


@pytest.mark.parametrize("job_id", ["does-not-exist", "x" * 65, "a b", "../etc"])
def test_unknown_job_is_404(client: FlaskClient, job_id: str) -> None:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_job_goes_from_queued_to_finished(
    client: FlaskClient, r: redis.Redis, worker_env: Any, caplog: Any
) -> None:
    with caplog.at_level("INFO"):
        job_id = client.post("/queue/members", json={"name": "Park", "age": 7}).get_json()["jobId"]
    assert any("job waiting" in rec.getMessage() and job_id in rec.getMessage() for rec in caplog.records)
    queued = client.get(f"/jobs/{job_id}").get_json()
    assert queued["status"] == "queued"
    assert queued["name"] == "createMemberJob"
    assert queued["queue"] == "member"
    assert queued["attempts"] == 0 and queued["maxAttempts"] == 3
    assert queued["enqueuedAt"] is not None and queued["startedAt"] is None
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    with caplog.at_level("INFO"):
        SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    done = client.get(f"/jobs/{job_id}").get_json()
    assert done["status"] == "finished"
    assert done["attempts"] == 1
    assert done["startedAt"] is not None and done["endedAt"] >= done["startedAt"]
    assert done["result"]["member_id"] >= 1
    assert done["error"] is None
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert f"job active id={job_id}" in messages
    assert f"job completed id={job_id}" in messages


@pytest.mark.parametrize("outcome", ["queued", "finished", "failed"])
def test_a_job_not_written_as_json_answers_its_status(
    client: FlaskClient, r: redis.Redis, outcome: str
) -> None:
    """A job enqueued by plain RQ with its default (pickle) serializer: its status, never a 500.

    Its data, meta and result are not read (the producer never unpickles what is in Redis).
    """
    queue = Queue("elsewhere", connection=r)
    job = queue.enqueue("os.getcwd" if outcome != "failed" else "os.chdir", meta={"owner": "another app"})
    if outcome != "queued":
        SimpleWorker([queue], connection=r).work(burst=True)
    response = client.get(f"/jobs/{job.id}")
    assert response.status_code == 200, response.get_data()
    body = response.get_json()
    assert body["status"] == outcome
    assert body["queue"] == "elsewhere"
    assert body["name"] == job.description
    assert body["result"] is None
    if outcome == "failed":
        assert body["error"].startswith("TypeError")
