"""The redis-archive CLI: help, configuration errors as messages, the worker command line."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from shared.cli import main
from shared.stack import worker_argv


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
