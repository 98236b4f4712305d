"""docker-compose.yml and the Dockerfile run only commands that exist in the project."""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import tomllib
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from shared.cli.main import main
from tests.servers import ROOT


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def console_scripts() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["scripts"])


@pytest.fixture(autouse=True)
def _test_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings modules imported by :func:`check_command` talk to the test's own Redis."""
    monkeypatch.setenv("ARCHIVE_TEST_REDIS_URL", redis_url)


def check_command(argv: list[str]) -> None:
    """Fail unless ``argv`` is a command this project (or its dependencies) provides."""
    program = argv[0]
    if program == "redis-archive":
        assert program in console_scripts()
        result = CliRunner().invoke(main, [*argv[1:], "--help"])
        assert result.exit_code == 0, (argv, result.output)
    elif program == "rq":
        assert argv[1] == "worker"
        assert "-S" in argv and argv[argv.index("-S") + 1] == "json", "workers must use the JSON serializer"
        # Import the settings module the way rq does, in a process of its own, against the
        # test's Redis (it checks the eviction policy at import).
        settings_module = argv[argv.index("-c") + 1]
        env = {**os.environ, "REDIS_URL": os.environ["ARCHIVE_TEST_REDIS_URL"]}
        env.pop("REDIS_SENTINELS", None)
        done = subprocess.run(
            [sys.executable, "-c", f"import {settings_module}"], env=env, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        if "-w" in argv:
            module, _, name = argv[argv.index("-w") + 1].rpartition(".")
            assert hasattr(importlib.import_module(module), name)
    elif program == "redis-server":
        pass
    elif program == "sh":
        # Sentinels write their config file first: `sh -c '... && exec redis-server FILE --sentinel'`.
        assert argv[1] == "-c"
        exec_argv = shlex.split(argv[2].rpartition("exec ")[2])
        assert exec_argv[0] == "redis-server" and "--sentinel" in exec_argv, argv
    else:
        raise AssertionError(f"unknown program {program!r} in {argv}")


def test_every_service_command_exists() -> None:
    services = compose()["services"]
    assert {"redis", "producer", "worker-1", "worker-2"} <= set(services)
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            assert "build" in service or "image" in service, name
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        check_command(argv)


def test_redis_is_durable_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    data_dir = command[command.index("--dir") + 1]
    assert any(str(volume).endswith(":" + data_dir) for volume in redis["volumes"])
    assert str(redis["volumes"][0]).split(":")[0] in compose()["volumes"]


def test_app_services_point_at_the_redis_service() -> None:
    services = compose()["services"]
    for name in ("producer", "worker-1", "worker-2"):
        service = services[name]
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:6379")
        assert service["build"] == "."
    assert "1111:1111" in services["producer"]["ports"]


def test_dockerfile_copies_existing_paths_and_runs_the_cli() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    cmd = next(line for line in lines if line.startswith("CMD "))
    check_command(__import__("json").loads(cmd[4:]))
