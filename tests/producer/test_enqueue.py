"""The lean enqueue path writes what RQ's Queue.enqueue writes, in one round trip; the bulk endpoint."""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from consumer.worker import FastWorker
from producer.enqueue import enqueue, job_options
from producer.state import get_state
from shared.connections import raw
from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE
from shared.rqmodel.dates import new_id
from shared.rqmodel.writes import RAW_PAYLOAD, SMALL_PAYLOAD, compress

VOLATILE = {b"created_at", b"enqueued_at"}


def test_enqueue_writes_the_job_hash_rq_writes(app: Flask, r: redis.Redis) -> None:
    payload = {"name": "Same", "age": 40, "email": None}
    with app.app_context():
        state = get_state()
        ours = enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
        theirs_job = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer).enqueue(
            CREATE_MEMBER_JOB, payload, **job_options(state.settings, CREATE_MEMBER_JOB_NAME)
        )
    mine, theirs = r.hgetall(f"rq:job:{ours}"), r.hgetall(theirs_job.key)
    assert set(mine) == set(theirs)
    # A small payload is stored as it is, RQ's compressed: RQ reads both back the same.
    assert mine.pop(b"data") == zlib.decompress(theirs.pop(b"data"))
    assert Job.fetch(ours, connection=r, serializer=JSONSerializer).data == theirs_job.data
    assert {k: v for k, v in mine.items() if k not in VOLATILE} == {
        k: v for k, v in theirs.items() if k not in VOLATILE
    }
    assert r.lrange(f"rq:queue:{MEMBER_QUEUE}", 0, -1) == [ours.encode(), theirs_job.id.encode()]
    assert b"rq:queue:member" in r.smembers("rq:queues")
    assert r.ttl(f"rq:job:{ours}") == r.ttl(theirs_job.key) == -1


def test_enqueue_is_one_round_trip(app: Flask, r: redis.Redis) -> None:
    with app.app_context():
        state = get_state()
        enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "a", "age": 1})
        r.config_resetstat()
        enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "b", "age": 2})
    stats = r.info("commandstats")
    # One transaction: the hash, the queue registered, the push, the job counted for /metrics.
    calls = {name: stat["calls"] for name, stat in stats.items() if not name.startswith("cmdstat_config")}
    assert calls == {
        "cmdstat_multi": 1,
        "cmdstat_hset": 1,
        "cmdstat_sadd": 1,
        "cmdstat_rpush": 1,
        "cmdstat_hincrby": 1,
        "cmdstat_exec": 1,
    }


def test_a_command_failing_inside_the_transaction_raises_and_leaves_the_connection_in_step(
    app: Flask, r: redis.Redis
) -> None:
    """A queue key of another type: RPUSH fails inside EXEC; the error is raised, the next write works."""
    payload = {"name": "a", "age": 1}
    with app.app_context():
        state = get_state()
        enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
        r.delete("rq:queue:member")
        r.set("rq:queue:member", "not a list")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
        r.delete("rq:queue:member")
        job_id = enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
    assert r.lrange("rq:queue:member", 0, -1) == [job_id.encode()]


def test_bulk_enqueues_up_to_1000_members_in_order(
    client: FlaskClient, r: redis.Redis, worker_env: Any
) -> None:
    members = [{"name": f"bulk {i}", "age": i % 150} for i in range(1000)]
    response = client.post("/queue/members/bulk", json={"members": members})
    assert response.status_code == 202, response.get_json()
    ids = response.get_json()["jobIds"]
    assert len(ids) == len(set(ids)) == 1000
    assert [x.decode() for x in r.lrange("rq:queue:member", 0, -1)] == ids
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    FastWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=3)
    done = [Job.fetch(job_id, connection=r, serializer=JSONSerializer) for job_id in ids[:3]]
    assert [job.return_value()["name"] for job in done] == ["bulk 0", "bulk 1", "bulk 2"]
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=1)
    assert Job.fetch(ids[3], connection=r, serializer=JSONSerializer).return_value()["name"] == "bulk 3"


def test_bulk_is_all_or_nothing(client: FlaskClient, r: redis.Redis) -> None:
    members: list[dict[str, Any]] = [{"name": f"m{i}", "age": 1} for i in range(10)]
    members[7] = {"name": "bad", "age": "7"}
    response = client.post("/queue/members/bulk", json={"members": members})
    assert response.status_code == 422
    assert [f["field"] for f in response.get_json()["error"]["fields"]] == ["members.7.age"]
    too_many = [{"name": "x", "age": 1}] * 1001
    response = client.post("/queue/members/bulk", json={"members": too_many})
    assert response.status_code == 422
    assert client.post("/queue/members/bulk", json={"members": []}).status_code == 422
    assert client.post("/queue/members/bulk", json=[{"name": "x", "age": 1}]).status_code == 422
    assert client.post("/queue/members/bulk", data="nope", content_type="application/json").status_code == 400
    huge = {"members": [{"name": "x" * 100, "age": 1}] * 1000, "pad": "y" * 600_000}
    assert client.post("/queue/members/bulk", json=huge).status_code == 413
    assert r.llen("rq:queue:member") == 0 and not r.keys("rq:job:*")


def test_bulk_is_documented(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/queue/members/bulk"]["post"]
    assert set(operation["responses"]) >= {"202", "413", "422"}
    schema = spec["components"]["schemas"]["MemberBulkIn"]
    assert schema["properties"]["members"]["maxItems"] == 1000


def test_enqueue_reconnects_when_its_pooled_connection_was_dropped(app: Flask, r: redis.Redis) -> None:
    with app.app_context():
        state = get_state()
        enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "a", "age": 1})
        r.client_kill_filter(_type="normal", skipme=True)
        member = {"name": "b", "age": 2}
        job_id = enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, member)
    assert r.llen("rq:queue:member") == 2
    assert r.hget(f"rq:job:{job_id}", "status") == b"queued"


def test_job_ids_are_uuid4_in_rqs_form() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every variant digit shows up: the nibble is random within 8-b.
    assert {job_id[19] for job_id in ids} == set("89ab")


def test_timestamps_parse_as_rq_writes_them(app: Flask, r: redis.Redis) -> None:
    with app.app_context():
        before = datetime.now(UTC).replace(tzinfo=None)
        job_id = enqueue(
            get_state(), MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "t", "age": 1}
        )
        after = datetime.now(UTC).replace(tzinfo=None)
    raw = r.hgetall(f"rq:job:{job_id}")
    assert raw[b"created_at"] == raw[b"enqueued_at"]
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", raw[b"created_at"])
    stamp = utcparse(raw[b"created_at"].decode())
    assert before <= stamp.replace(tzinfo=None) <= after
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.enqueued_at is not None and job.created_at is not None
    assert job.origin == MEMBER_QUEUE


@pytest.mark.parametrize("size", [0, 1, 100, 128, 129, 511, 512, 513, 5000])
def test_job_data_decompresses_as_rqs(size: int) -> None:
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    if size <= RAW_PAYLOAD:
        assert compress(raw) == raw
    else:
        assert zlib.decompress(compress(raw)) == raw
    if size > SMALL_PAYLOAD:
        assert compress(raw) == zlib.compress(raw)


@pytest.mark.parametrize("name_length", [1, 60, 600])
def test_rq_reads_job_data_of_every_size_as_it_was_enqueued(
    app: Flask, r: redis.Redis, name_length: int
) -> None:
    payload = {"name": "n" * name_length, "age": 7, "email": None}
    with app.app_context():
        job_id = enqueue(get_state(), MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payload)
    stored = r.hget(f"rq:job:{job_id}", "data")
    assert stored is not None
    # Small payloads are stored as they are, larger ones compressed as RQ compresses them.
    assert stored.startswith(b"[") == (name_length < 60)
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.func_name == CREATE_MEMBER_JOB
    assert list(job.args) == [payload]
    assert job.kwargs == {}


def test_each_thread_keeps_one_connection_and_survives_a_kill(app: Flask, r: redis.Redis) -> None:
    with app.app_context():
        state = get_state()

    def burst(n: int) -> None:
        for i in range(n):
            enqueue(
                state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": f"t{i}", "age": 1}
            )

    in_use = state.redis.connection_pool._in_use_connections  # type: ignore[attr-defined]
    barrier = threading.Barrier(4)

    def burst_and_count(n: int) -> int:
        burst(n)
        barrier.wait()
        return len(in_use)  # every thread still holds its connection here

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(burst_and_count, [50] * 4)) == [4] * 4
    assert r.llen("rq:queue:member") == 200
    gc.collect()
    assert len(in_use) == 0  # given back when the threads ended
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(burst, [1] * 4))
        r.client_kill_filter(_type="normal", skipme=True)  # the held connections die between jobs
        list(pool.map(burst, [24] * 4))
    assert r.llen("rq:queue:member") == 300
    assert len(set(r.lrange("rq:queue:member", 0, -1))) == 300
    state.redis.connection_pool.disconnect()
    burst(1)
    assert r.llen("rq:queue:member") == 301


def test_a_held_connection_closed_by_the_server_while_idle_is_replaced_without_a_retry(
    app: Flask, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(raw, "IDLE_CHECK_SECONDS", 0.0)
    with app.app_context():
        state = get_state()
        enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "a", "age": 1})
        r.client_kill_filter(_type="normal", skipme=True)  # as a server `timeout` would
        time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="producer.enqueue"):
            enqueue(state, MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, {"name": "b", "age": 2})
    assert r.llen("rq:queue:member") == 2
    assert not [record for record in caplog.records if "retrying" in record.getMessage()]
