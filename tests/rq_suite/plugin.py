"""pytest plugin of an RQ suite run: ``pytest -p rq_suite.plugin --rq-suite-report=PATH``.

- refuses to run when :mod:`.patches` did not redirect RQ's default Redis (the process would
  talk to ``localhost:6379``);
- with ``--rq-suite-fork``, runs each test in a forked process with a time limit (:mod:`.forked`);
- runs the tests that write fixed paths under ``/tmp`` (RQ's sentinel files and sandboxes) one
  at a time across both runs and all xdist workers, holding the lock file that the runner names;
- notes in each test's teardown report which worker classes its processes used (:mod:`.patches`);
- kills the processes a test left behind, in the test process after its teardown (the processes
  of a test process that died are killed with its process group, :mod:`.forked`);
- writes one JSON object for the runner: test id -> outcome, a short reason, the usage record.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from . import patches
from .forked import become_subreaper, run_forked

logger = logging.getLogger(__name__)

#: The lock file (shared by both runs) held by tests that write fixed paths under ``/tmp``.
PATHS_LOCK_ENV = "RQ_SUITE_PATHS_LOCK"
#: A folder of the runner's for the tests' scratch files (the system's temp folder without it).
SCRATCH_ENV = "RQ_SUITE_SCRATCH"
#: How such a test is recognised: this text in its method, or in its class's set-up or tear-down.
_FIXED_PATH = "/tmp/"
_CLASS_HOOKS = ("setUp", "tearDown", "setUpClass", "tearDownClass")

#: The ``user_properties`` key of the usage record in a test's teardown report.
USAGE_PROPERTY = "rq_suite_usage"
#: Seconds a left-over process gets to exit after SIGKILL before it is reported.
_REAP_WAIT = 5.0
_REASON_CHARS = 300


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rq-suite-report``, ``--rq-suite-fork`` and ``--rq-suite-timeout``."""
    parser.addoption("--rq-suite-report", default=None, help="write per-test outcomes to this JSON file")
    parser.addoption("--rq-suite-fork", action="store_true", help="run each test in a forked process")
    parser.addoption(
        "--rq-suite-timeout", type=float, default=180.0, help="seconds a forked test may run (stacks dumped)"
    )


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run unredirected; start collecting outcomes in the controller."""
    if not patches.REDIRECTED:
        raise pytest.UsageError(
            f"rq_suite.plugin: Redis is not redirected ({patches.PORTS_ENV} unset or sitecustomize "
            "not loaded); run the suite through `python -m tests.rq_suite.run`"
        )
    if config.getoption("--rq-suite-fork"):
        become_subreaper()
    report = config.getoption("--rq-suite-report")
    if report and not _is_xdist_worker(config):
        config.pluginmanager.register(
            OutcomeRecorder(Path(report), patches.WORKER_KIND or "?"), "rq-suite-outcomes"
        )


def kill_descendants(process: psutil.Process) -> list[str]:
    """SIGKILL every descendant of ``process`` and wait for them; their command lines."""
    try:
        children = process.children(recursive=True)
    except psutil.Error:
        return []
    killed = []
    for child in children:
        try:
            killed.append(" ".join(child.cmdline()[:4]) or child.name())
            child.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(children, timeout=_REAP_WAIT)
    return killed


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Give this test a fresh usage file, named in the environment its processes inherit."""
    descriptor, path = tempfile.mkstemp(prefix="usage-", dir=os.environ.get(SCRATCH_ENV))
    os.close(descriptor)
    os.environ[patches.USAGE_FILE_ENV] = path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the usage record to the teardown report; kill what the test left running."""
    report = yield
    if report.when == "teardown":
        left = kill_descendants(psutil.Process())
        path = os.environ.pop(patches.USAGE_FILE_ENV, None)
        if path:
            report.user_properties.append((USAGE_PROPERTY, patches.read_usage(path)))
            os.unlink(path)
        if left:
            logger.info("rq_suite.plugin: %s left %d process(es) running: %s", item.nodeid, len(left), left)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """With ``--rq-suite-fork``: the test's setup, call and teardown run in a child process."""
    config = item.config
    if not config.getoption("--rq-suite-fork"):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    with _paths_lock(item):
        reports = run_forked(item, config.getoption("--rq-suite-timeout"))
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def writes_fixed_paths(item: pytest.Item) -> bool:
    """Whether ``item``'s code names a fixed path under ``/tmp`` (two at once would collide)."""
    sources = [getattr(item, "obj", None)]
    cls = getattr(item, "cls", None)
    if cls is not None:
        sources += [cls.__dict__.get(name) for name in _CLASS_HOOKS]
    for source in sources:
        if source is None:
            continue
        try:
            if _FIXED_PATH in inspect.getsource(inspect.unwrap(getattr(source, "__func__", source))):
                return True
        except (OSError, TypeError):
            continue
    return False


@contextmanager
def _paths_lock(item: pytest.Item) -> Iterator[None]:
    """Hold the runs' shared lock while ``item`` runs, if it writes fixed paths."""
    path = os.environ.get(PATHS_LOCK_ENV)
    if not path or not writes_fixed_paths(item):
        yield
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """One line that says why a test did not pass: the exception line, or the skip reason."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        text = str(longrepr[2])
    elif isinstance(longrepr, str):
        # A test process that died (:mod:`.forked`): how it ended, then its last output.
        text = longrepr.splitlines()[0] if longrepr else ""
    else:
        lines = [line for line in report.longreprtext.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E ")]
        text = (errors[0][1:] if errors else lines[-1] if lines else "").strip()
    return text[:_REASON_CHARS]


class OutcomeRecorder:
    """Collects each test's outcome in the controller process and writes them at the end."""

    def __init__(self, path: Path, worker_kind: str) -> None:
        self.path = path
        self.worker_kind = worker_kind
        self.results: dict[str, dict[str, Any]] = {}

    def _entry(self, nodeid: str) -> dict[str, Any]:
        return self.results.setdefault(nodeid, {"outcome": None, "reason": "", "usage": {}, "duration": 0.0})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold a setup, call, teardown or subtest report (or a dead test process's) into the outcome."""
        entry = self._entry(report.nodeid)
        entry["duration"] += report.duration
        for key, value in report.user_properties:
            if key == USAGE_PROPERTY:
                entry["usage"] = value
        if hasattr(report, "context"):
            # A unittest subTest's report: a failed one fails the test, whatever the call says.
            if report.failed:
                entry["outcome"], entry["reason"] = "failed", "subtest: " + _reason(report)
                entry["subtest_failed"] = True
            return
        if entry.get("subtest_failed"):
            return
        if report.when == "setup":
            if report.failed:
                entry["outcome"], entry["reason"] = "error", _reason(report)
            elif report.skipped:
                entry["outcome"], entry["reason"] = "skipped", _reason(report)
        elif report.when == "call":
            if report.passed:
                entry["outcome"] = "passed"
            elif report.skipped:
                entry["outcome"], entry["reason"] = "skipped", _reason(report)
            else:
                entry["outcome"], entry["reason"] = "failed", _reason(report)
        elif report.when == "teardown":
            if report.failed and entry["outcome"] in (None, "passed"):
                entry["outcome"], entry["reason"] = "error", "teardown: " + _reason(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that does not import counts as one error."""
        if report.failed:
            entry = self._entry(report.nodeid)
            entry["outcome"], entry["reason"] = "error", "collection: " + _reason(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the outcomes (tests with no report at all count as errors)."""
        for entry in self.results.values():
            if entry["outcome"] is None:
                entry["outcome"], entry["reason"] = "error", "no outcome reported"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"worker": self.worker_kind, "tests": self.results}
        self.path.write_text(json.dumps(payload, indent=1, sort_keys=True))
