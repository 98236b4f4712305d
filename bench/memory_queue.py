"""Bytes of Redis memory per queued job and per finished job kept for its result TTL.

Run with ``flock /tmp/bench.lock .venv/bin/python -m bench.memory_queue --jobs 2000``.
Real RQ jobs through the real paths: ``POST /queue/members`` on the producer app, then a plain
``rq worker -c consumer.settings --burst member`` that runs ``createMemberJob`` against SQLite.
A private ``redis-server`` (clean config, ``noeviction``) is started here. A warm-up round
first lets the server allocate what it allocates once (latency histograms of each command,
cached scripts, the registries' first keys), so the figures are per job only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from shared.settings import Settings
from shared.stack.binaries import NO_SERVER, find_server
from shared.stack.procs import free_port


def used_memory(url: str) -> int:
    """``used_memory`` read over a new connection (every reading carries the same one client)."""
    conn = redis.Redis.from_url(url)
    try:
        return int(conn.info("memory")["used_memory"])
    finally:
        conn.close()


def key_families(url: str) -> dict[str, int]:
    """How many keys of each kind (``rq:job``, ``rq:results`` ...) the server holds."""
    conn = redis.Redis.from_url(url)
    try:
        counts: Counter[str] = Counter()
        for key in conn.scan_iter(count=1000):
            name = key.decode()
            parts = name.split(":")
            counts[":".join(parts[:2]) if len(parts) > 2 else name] += 1
        return dict(counts)
    finally:
        conn.close()


def sample_usage(url: str, pattern: str) -> dict[str, int]:
    """``MEMORY USAGE`` of one key matching ``pattern`` (a typical job hash or result stream)."""
    conn = redis.Redis.from_url(url)
    try:
        for key in conn.scan_iter(match=pattern, count=1000):
            return {key.decode(): int(conn.memory_usage(key, samples=0) or 0)}
        return {}
    finally:
        conn.close()


def post_members(app: Any, start: int, count: int) -> None:
    client = app.test_client()
    for i in range(start, start + count):
        response = client.post(
            "/queue/members", json={"name": f"member-{i}", "age": i % 151, "email": f"m{i}@example.com"}
        )
        if response.status_code != 202:
            raise SystemExit(f"enqueue failed: {response.status_code} {response.get_data(as_text=True)}")


def run_worker(url: str, database_url: str) -> None:
    env = dict(os.environ, REDIS_URL=url, DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    argv = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "-c",
        "consumer.settings",
        "-S",
        "json",
        "--burst",
        "member",
    ]
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    found = find_server()
    if found is None:
        raise SystemExit(NO_SERVER)
    from producer import create_app

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [found.path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        try:
            for _ in range(100):
                try:
                    used_memory(url)
                    break
                except redis.ConnectionError:
                    import time

                    time.sleep(0.05)
            settings = Settings.from_env({"REDIS_URL": url, "DATABASE_URL": database_url})
            app = create_app(asdict(settings))
            post_members(app, 0, 100)
            run_worker(url, database_url)
            base = used_memory(url)
            keys_base = key_families(url)
            post_members(app, 100, args.jobs)
            queued = used_memory(url)
            keys_queued = key_families(url)
            queued_job = sample_usage(url, "rq:job:*")
            run_worker(url, database_url)
            finished = used_memory(url)
            keys_finished = key_families(url)
            finished_job = sample_usage(url, "rq:job:*")
            result_stream = sample_usage(url, "rq:results:*")
            state = app.extensions["redis_archive"]
            state.engine.dispose()
            state.redis.close()
        finally:
            server.terminate()
            server.wait(10)
    report = {
        "redis_server": found.path,
        "jobs": args.jobs,
        "result_ttl": settings.result_ttl,
        "bytes_per_queued_job": round((queued - base) / args.jobs, 1),
        "bytes_per_finished_job": round((finished - base) / args.jobs, 1),
        "memory_usage_samples": {
            "queued job": queued_job,
            "finished job": finished_job,
            "result": result_stream,
        },
        "keys_before": keys_base,
        "keys_queued": keys_queued,
        "keys_finished": keys_finished,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
