"""The server's scheduling policy: ``shared.stack.batch`` and ``redis-archive serve``'s processes under it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from shared.stack import procs
from shared.stack.local import producer_argv
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import RedisProc, run_env

#: Prints the policy of its main thread and of a thread it starts.
POLICIES = """
import os, threading
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(threading.get_native_id())))
thread.start(); thread.join()
print(os.sched_getscheduler(0), seen[0])
"""


def test_the_command_and_the_threads_it_starts_run_under_sched_batch() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.stack.batch", sys.executable, "-c", POLICIES],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.SCHED_BATCH)] * 2
    assert result.stderr == ""


def test_the_command_keeps_its_exit_status_and_a_missing_one_is_a_usage_error() -> None:
    failing = subprocess.run([sys.executable, "-m", "shared.stack.batch", "false"], timeout=60)
    assert failing.returncode == 1
    bare = subprocess.run(
        [sys.executable, "-m", "shared.stack.batch"], capture_output=True, text=True, timeout=60
    )
    assert bare.returncode != 0
    assert "usage: python -m shared.stack.batch COMMAND" in bare.stderr
    assert "Traceback" not in bare.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "policy"), [(None, os.SCHED_BATCH), ("0", os.SCHED_OTHER)])
def test_every_thread_of_the_served_producer_runs_under_sched_batch_unless_turned_off(
    redis_proc: RedisProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, policy: int
) -> None:
    if setting is None:
        monkeypatch.delenv("SERVER_SCHED_BATCH", raising=False)
    else:
        monkeypatch.setenv("SERVER_SCHED_BATCH", setting)
    port = free_port()
    env = run_env(REDIS_URL=redis_proc.url, DATABASE_URL=f"sqlite:///{tmp_path / 'db'}", LOG_LEVEL="WARNING")
    server = procs.spawn(producer_argv("127.0.0.1", port, workers=2), env=env)
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 30), "producer did not start"
        answer = requests.post(
            f"http://127.0.0.1:{port}/queue/members", json={"name": "Lee", "age": 3}, timeout=10
        )
        assert answer.status_code == 202, answer.text
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        assert len(tree) == 3  # granian's main process and its 2 workers
        assert all("granian" in " ".join(process.cmdline()) for process in tree)
        threads = [thread.id for process in tree for thread in process.threads()]
        assert len(threads) > 6  # each worker's Rust runtime, Python threads, stats thread
        assert {os.sched_getscheduler(tid) for tid in threads} == {policy}
    finally:
        procs.stop(server)


def test_a_refused_policy_leaves_the_command_running_under_the_default_one() -> None:
    """A sandbox may refuse sched_setscheduler: the command still runs, told why the policy is unchanged."""
    refuse = (
        "import os\n"
        "def refuse(*args): raise PermissionError(1, 'Operation not permitted')\n"
        "os.sched_setscheduler = refuse\n"
        "from shared.stack.batch import main\n"
        f"main([{sys.executable!r}, '-c', 'import os; print(os.sched_getscheduler(0))'])\n"
    )
    result = subprocess.run([sys.executable, "-c", refuse], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.SCHED_OTHER)]
    assert "default scheduling policy (SCHED_BATCH refused" in result.stderr
    assert "Traceback" not in result.stderr
