"""docker-compose.yml and the Dockerfile run only commands that exist in the project."""

from __future__ import annotations

import importlib
import json
import os
import re
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

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::-([^}]*))?\}")


def env_file(name: str) -> dict[str, str]:
    """``KEY=value`` lines of an env file for ``docker compose --env-file``."""
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose reads it with ``env`` (``${VAR:-default}``, ``$$`` for ``$``)."""
    env = env or {}

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1)) or match.group(2) or ""

    text = _VARIABLE.sub(substitute, (ROOT / "docker-compose.yml").read_text())
    data: dict[str, Any] = yaml.safe_load(text)
    return data


#: The server programs each image family provides.
SERVERS = {"redis-server", "valkey-server"}


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
    elif program in SERVERS:
        pass
    elif program == "sh":
        # Sentinels write their config file first: `sh -c '... && exec redis-server FILE --sentinel'`.
        assert argv[1] == "-c"
        exec_argv = shlex.split(argv[2].rpartition("exec ")[2])
        assert exec_argv[0] in SERVERS and "--sentinel" in exec_argv, argv
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


def test_valkey_env_puts_every_server_and_sentinel_on_the_valkey_image() -> None:
    redis, valkey = compose(), compose(env_file("valkey.env"))
    assert env_file("valkey.env")["REDIS_IMAGE"] == "valkey/valkey:9.1"
    anchors = [name for name, svc in redis["services"].items() if "image" in svc]
    assert {"redis", "redis-master", "redis-replica-1", "sentinel-1", "sentinel-3"} <= set(anchors)
    for name in anchors:
        before, after = redis["services"][name], valkey["services"][name]
        assert before["image"] == "redis:7.0" and after["image"] == "valkey/valkey:9.1", name
        # The same arguments; only the program names differ.
        renamed = json.dumps(before["command"]).replace("redis-server", "valkey-server")
        assert json.dumps(after["command"]) == renamed, name
        assert "redis-server" not in json.dumps(after["command"]), name
        assert after["healthcheck"]["test"][1] == "valkey-cli", name
        assert before["healthcheck"]["test"][1] == "redis-cli", name
        command = after["command"]
        check_command(command if isinstance(command, list) else shlex.split(command))
    # The apps are the same images and settings on either server.
    for name in ("producer", "worker-1", "producer-ha"):
        assert redis["services"][name] == valkey["services"][name]


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
