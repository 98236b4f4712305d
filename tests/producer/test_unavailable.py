"""Redis unreachable: 503 JSON, nothing lost, and recovery without a restart."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer import create_app
from shared.settings import Settings
from tests.servers import close_app, start_redis


def test_503_while_redis_is_down_then_recovers(tmp_path: Path) -> None:
    # fsync on every write: a SIGKILL right after a 202 must not lose the job.
    server = start_redis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    settings = Settings(
        redis_url=server.url, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", socket_timeout=0.5
    )
    app = create_app(asdict(settings))
    client = app.test_client()
    try:
        first = client.post("/queue/members", json={"name": "before", "age": 1})
        assert first.status_code == 202

        server.kill()
        down = client.post("/queue/members", json={"name": "during", "age": 2})
        assert down.status_code == 503
        assert down.get_json()["error"]["code"] == "unavailable"
        assert down.headers["Retry-After"] == "1"
        assert client.get(f"/jobs/{first.get_json()['jobId']}").status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["checks"]["redis"].startswith("unavailable")
        assert client.get("/healthz").status_code == 200

        server.restart()
        again = client.post("/queue/members", json={"name": "after", "age": 3})
        assert again.status_code == 202
        queue = Queue("member", connection=server.client(), serializer=JSONSerializer)
        # The job accepted before the outage survived it (append-only file);
        # the refused one was never written.
        assert queue.job_ids == [first.get_json()["jobId"], again.get_json()["jobId"]]
        assert client.get("/readyz").status_code == 200
    finally:
        close_app(app)
        server.kill()


def test_full_redis_answers_503_and_writes_nothing(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    settings = Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    app = create_app(asdict(settings))
    client = app.test_client()
    conn = server.client()
    try:
        accepted = client.post("/queue/members", json={"name": "first", "age": 1})
        assert accepted.status_code == 202
        filler = "x" * 1000
        i = 0
        while True:  # fill the server until it refuses writes, as a runaway producer would
            try:
                conn.set(f"filler:{i}", filler)
            except redis.exceptions.OutOfMemoryError:
                break
            i += 1
        keys_before = conn.dbsize()
        full = client.post("/queue/members", json={"name": "second", "age": 2})
        assert full.status_code == 503
        assert full.get_json()["error"]["code"] == "out_of_memory"
        assert full.headers["Retry-After"] == "5"
        queue = Queue("member", connection=conn, serializer=JSONSerializer)
        assert queue.job_ids == [accepted.get_json()["jobId"]]
        assert conn.dbsize() == keys_before
    finally:
        conn.close()
        close_app(app)
        server.kill()
