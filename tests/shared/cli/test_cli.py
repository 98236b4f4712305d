"""The redis-archive CLI: help, configuration errors as messages, the worker command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
from click.testing import CliRunner
from rq import Callback, Queue
from rq.serializers import JSONSerializer

from shared.cli.main import main
from shared.stack.local import worker_argv
from tests.servers import RedisProc


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "serve", "worker"):
        assert command in result.output


def test_bad_setting_is_a_message_not_a_traceback() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"], env={"PORT": "x"})
    # --help is eager and exits before settings are read; a real run reports the error.
    assert result.exit_code == 0
    result = CliRunner().invoke(main, ["serve"], env={"PORT": "x"})
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_bad_env_value_is_reported_by_name() -> None:
    result = CliRunner().invoke(main, ["up"], env={"JOB_ATTEMPTS": "zero"})
    assert result.exit_code == 1
    assert "Error: JOB_ATTEMPTS must be an integer" in result.output


def test_worker_command_is_plain_rq_worker_with_json() -> None:
    argv = worker_argv(["member"], burst=True)
    assert argv[:8] == [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json"]
    assert argv[-1] == "member" and "--burst" in argv


def test_redis_archive_worker_processes_member_jobs(
    redis_proc: RedisProc, r: redis.Redis, tmp_path: Path
) -> None:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue(
        "consumer.jobs.create_member",
        {"name": "cli", "age": 9},
        meta={"name": "createMemberJob"},
        on_success=Callback("consumer.events.on_success"),
    )
    cli = str(Path(sys.executable).parent / "redis-archive")
    env = {**os.environ, "REDIS_URL": redis_proc.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    result = subprocess.run([cli, "worker", "--burst", "member"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    job.refresh()
    assert job.get_status().value == "finished"
    assert job.return_value()["name"] == "cli"
    # The worker shows this project's job events beside RQ's own lines.
    assert f"job active id={job.id}".encode() in result.stderr
    assert f"job completed id={job.id}".encode() in result.stderr
