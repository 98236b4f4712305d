"""End to end with real processes: gunicorn producer, two plain `rq worker`s, 500 members."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select

from shared.db import make_engine, member
from shared.stack.local import producer_argv
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import RedisProc, kill_all, run_env

pytestmark = pytest.mark.slow

RQ = str(Path(sys.executable).parent / "rq")


@pytest.fixture
def stack(redis_proc: RedisProc, r: redis.Redis, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Gunicorn on a free port and two workers started with the documented plain command."""
    db_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    env = run_env(REDIS_URL=redis_proc.url, DATABASE_URL=db_url, LOG_LEVEL="WARNING")
    port = free_port()
    logs = [open(tmp_path / name, "wb") for name in ("producer.log", "worker1.log", "worker2.log")]
    procs = [subprocess.Popen(producer_argv("127.0.0.1", port), env=env, stdout=logs[0], stderr=logs[0])]
    for log in logs[1:]:
        procs.append(
            subprocess.Popen(
                [RQ, "worker", "-c", "consumer.settings", "-S", "json", "member"],
                env=env,
                stdout=log,
                stderr=log,
            )
        )
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30), "producer did not start"
        yield f"http://127.0.0.1:{port}", db_url
    finally:
        kill_all(procs)
        for log in logs:
            log.close()


def test_500_members_posted_concurrently_are_written_exactly_once(stack: tuple[str, str]) -> None:
    base, db_url = stack
    local = __import__("threading").local()

    def post(i: int) -> str:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(
            f"{base}/queue/members",
            json={"name": f"member-{i}", "age": i % 151, "email": f"m{i}@example.com"},
        )
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    with ThreadPoolExecutor(16) as pool:
        job_ids = list(pool.map(post, range(500)))
    assert len(set(job_ids)) == 500

    # Through the real server a chunked body (a generator: no Content-Length) over the limit
    # is a 413, not JSON cut at the limit.
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "age": 1, "email": "'
        yield b"x" * 70_000
        yield b'@example.com"}'

    response = requests.post(
        f"{base}/queue/members", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_entity_too_large"

    engine = make_engine(db_url)

    def all_written() -> bool:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(member)).scalar_one()) >= 500

    assert wait_until(all_written, 300, interval=0.5), "workers did not write 500 rows in time"
    time.sleep(0.5)  # let any duplicate writer finish, so a double insert would be counted
    with engine.connect() as conn:
        rows = conn.execute(select(member.c.job_id, member.c.name)).all()
    engine.dispose()
    assert len(rows) == 500
    assert sorted(row.job_id for row in rows) == sorted(job_ids)
    assert {row.name for row in rows} == {f"member-{i}" for i in range(500)}

    with requests.Session() as session:
        statuses = {}
        for job_id in job_ids:
            deadline = time.monotonic() + 10
            while True:
                info = session.get(f"{base}/jobs/{job_id}").json()
                if info["status"] == "finished" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            statuses[job_id] = info["status"]
            assert info["attempts"] == 1
    assert set(statuses.values()) == {"finished"}
