"""POST /probes/<kind> enqueues on queue probe; a worker runs it; eviction-policy refusals at start."""

from __future__ import annotations

import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from producer import create_app
from shared.connections.identity import server_identity
from shared.exceptions import EvictionPolicyError
from shared.settings import Settings
from shared.stack.local import worker_argv
from tests.servers import run_env, start_redis


def run_probe(client: FlaskClient, r: Any, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/probes/{kind}", json=body)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["jobId"]
    queue = Queue("probe", connection=r, serializer=JSONSerializer)
    assert job_id in queue.job_ids
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == "finished", job.latest_result()
    result: dict[str, Any] = job.return_value()
    shown = client.get(f"/jobs/{job_id}").get_json()
    assert shown["status"] == "finished" and shown["result"] == result
    return result


def test_probe_jobs_over_http(client: FlaskClient, r: Any, worker_env: Any) -> None:
    key = run_probe(client, r, "key", {"set": [{"key": "deps1:10", "value": '{"key1": 1, "key2": 2}'}]})
    # Redis 7.0: dict entry 24 + key 16 + value 48 (jemalloc's size classes). Valkey 9.1 (glibc):
    # one object in a 64-byte chunk, 56 usable, on a fresh server (tests/shared/memory). On this
    # session's server, after the other core tests, it once measured 72: MEMORY USAGE reports
    # the chunk's usable size, and glibc may hand out a free 80-byte chunk whole (a 16-byte rest
    # is too small to split off). The model cannot know the heap's history.
    model = key["keys"][0]["model_memory_usage"]
    if server_identity(r).is_valkey:
        assert model == 56 and key["keys"][0]["memory_usage"] in (56, 72), key
    else:
        assert model == 88 == key["keys"][0]["memory_usage"], key
    # The session's server has served many tests: give it 4 MiB above what it already uses.
    limit = int(r.info("memory")["used_memory"]) + (4 << 20)
    cap = run_probe(
        client, r, "capacity", {"key_pattern": "key{i}", "value": "same_value", "maxmemory": limit}
    )
    assert cap["low"] <= cap["predicted_keys"] <= cap["high"] and cap["predicted_keys"] > 10000
    swept = run_probe(client, r, "sweep", {"what": "value", "start": 1, "stop": 5})
    assert [row["length"] for row in swept["rows"]] == [1, 2, 3, 4, 5]
    watched = run_probe(client, r, "watch", {"count": 1})
    assert watched["samples"][0]["maxmemory_policy"] == "noeviction"


@pytest.mark.parametrize(
    "body",
    [
        {"key_pattern": "key", "value": "v"},
        {"key_pattern": "k{i}", "value": "v", "ttl": 0},
        {"value": "v"},
        {"key_pattern": "k{i}", "value": "v", "fill": True},
    ],
)
def test_probe_validation(client: FlaskClient, r: Any, body: dict[str, Any]) -> None:
    response = client.post("/probes/capacity", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"]
    assert client.post("/probes/unknown", json={}).status_code == 404
    assert r.llen("rq:queue:probe") == 0


def test_app_and_worker_refuse_evicting_policy(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "lru", "--maxmemory-policy", "allkeys-lru")
    try:
        settings = Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path / 'db'}")
        with pytest.raises(EvictionPolicyError, match="allkeys-lru"):
            create_app(asdict(settings))
        allowed = create_app(asdict(settings.with_overrides(allow_evicting_policy=True)))
        state = allowed.extensions["redis_archive"]
        state.engine.dispose()
        state.redis.close()
        argv = worker_argv(["probe"], burst=True)
        refused = subprocess.run(
            argv, env=run_env(REDIS_URL=server.url), capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 78
        assert "refusing to start the worker" in refused.stderr and "allkeys-lru" in refused.stderr
        ok = subprocess.run(
            argv,
            env=run_env(REDIS_URL=server.url, ALLOW_EVICTING_POLICY="1"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        server.kill()
