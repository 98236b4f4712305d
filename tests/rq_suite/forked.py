"""Each test in a process of its own: fork, run the test's whole protocol there, send back its reports.

What pytest-forked does, written for this suite because its 1.7 cannot send pytest 9.2's
reports back (``marshal`` fails on the reports' ``NodeId``), and because the suite needs a
time limit that works while tests use ``SIGALRM`` themselves. Here the reports travel as JSON
through pytest's own ``pytest_report_to_serializable`` hooks (as xdist sends them), and a test
that runs too long gets its stacks dumped by :mod:`faulthandler` and is killed.

A test that kills the process it runs in (RQ's tests that SIGKILL "the horse", which for an
in-process worker is the test process itself) fails with the way it died and its last output.
The test process leads a process group of its own; what it started and left running when it
died is killed with that group.

The process that forks the tests is a child subreaper (Linux): a process orphaned under a test
(the children of a killed work horse) becomes its child, and it reaps it at once, as RQ's tests
expect (``psutil.pid_exists`` must turn false). The init of a container need not reap that fast.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

import pytest
from _pytest.runner import runtestprotocol

logger = logging.getLogger(__name__)

#: Seconds past the limit before the parent kills a test process whose stack dump did not end it.
_GRACE = 15.0
#: Lines of a dead test process's output kept in its report.
_TAIL_LINES = 40
#: The exit status of a test process whose protocol raised (an internal error, not a test failure).
_EXIT_INTERNAL = 3
#: ``prctl(PR_SET_CHILD_SUBREAPER, 1)``.
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt the orphans of the test processes this process forks (see the module's docstring)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("rq_suite.forked: could not become a child subreaper (errno %d)", ctypes.get_errno())


def _child(item: pytest.Item, reports_path: Path, output_path: Path, timeout: float) -> NoReturn:
    """In the forked process: run ``item``, write its reports as JSON, exit without cleanup."""
    status = 0
    try:
        os.setpgid(0, 0)
        # Output outside pytest's capture (and a dump on timeout) goes to a file that outlives us.
        output = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(output, 1)
        os.dup2(output, 2)
        # faulthandler writes to this file's descriptor: pytest's capture moves 1 and 2 meanwhile.
        dump = open(output_path, "a")  # left open: the process ends with os._exit
        faulthandler.dump_traceback_later(timeout, exit=True, file=dump)
        reports = runtestprotocol(item, log=False, nextitem=None)
        faulthandler.cancel_dump_traceback_later()
        config = item.config
        payload = [config.hook.pytest_report_to_serializable(config=config, report=r) for r in reports]
        reports_path.write_text(json.dumps(payload))
    except BaseException:
        traceback.print_exc()
        status = _EXIT_INTERNAL
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _wait(pid: int, limit: float) -> tuple[int, bool]:
    """Wait for ``pid``, reaping adopted orphans the moment they end.

    Its wait status, and whether it had to be killed after ``limit`` seconds (by a timer
    thread, through a pidfd so that a reaped and reused pid is never hit).
    """
    pidfd = os.pidfd_open(pid)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(limit, kill)
    timer.daemon = True
    timer.start()
    try:
        while True:
            # Block until a child ends; see which without reaping: the test process or an orphan.
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            if ended is None:  # only with WNOHANG; keeps the type checker informed
                continue
            status = os.waitpid(ended.si_pid, 0)[1]
            if ended.si_pid == pid:
                return status, killed.is_set()
    finally:
        timer.cancel()
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a finished test process's group (what a dead test process started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    logger.info("rq_suite.forked: killed the processes left in group %d", pgid)


def _death(status: int, killed: bool, timeout: float) -> str:
    """How a test process that sent no reports ended."""
    if killed:
        return f"test process still running {timeout + _GRACE:.0f}s after its start; killed"
    if os.WIFSIGNALED(status):
        return f"test process killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.waitstatus_to_exitcode(status)
    if code == 1:
        return (
            f"test process exited with status 1 (a timeout after {timeout:.0f}s dumps stacks, then exits 1)"
        )
    return f"test process exited with status {code}"


def run_forked(item: pytest.Item, timeout: float) -> list[pytest.TestReport]:
    """Run ``item``'s setup, call and teardown in a child process; its reports."""
    config = item.config
    with tempfile.TemporaryDirectory(prefix="rq-suite-test-") as directory:
        reports_path = Path(directory, "reports.json")
        output_path = Path(directory, "output")
        started = time.time()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(item, reports_path, output_path, timeout)
        try:
            os.setpgid(pid, pid)  # also here: no race with the killpg below
        except OSError:
            pass  # the child has done it, or already exited
        status, killed = _wait(pid, timeout + _GRACE)
        _kill_group(pid)
        if reports_path.exists():
            payload = json.loads(reports_path.read_text())
            return [config.hook.pytest_report_from_serializable(config=config, data=data) for data in payload]
        output = output_path.read_text(errors="replace") if output_path.exists() else ""
    tail = "\n".join(output.splitlines()[-_TAIL_LINES:])
    longrepr = _death(status, killed, timeout) + ("\n" + tail if tail else "")
    stopped = time.time()
    crash = pytest.TestReport(
        item.nodeid,
        item.location,
        {name: 1 for name in item.keywords},
        "failed",
        longrepr,
        "call",
        duration=stopped - started,
        start=started,
        stop=stopped,
    )
    return [crash]
