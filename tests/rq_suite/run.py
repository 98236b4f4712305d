"""``make test-rq``: RQ's own worker tests, with RQ's worker classes and with ``FastWorker``.

``python -m tests.rq_suite.run [-n WORKERS] [-k EXPR]``

1. Fetches the sdist of the installed RQ with pip into ``.cache/rq-suite/`` and extracts its
   ``tests/`` (once per version).
2. Starts private redis-servers on free ports (one per xdist worker and run); every process of a
   run sends RQ's default ``localhost:6379`` there (:mod:`.patches`, via ``site/sitecustomize.py``).
3. Runs :data:`MODULES` twice, slow tests on, each test in its own forked process: the control
   with RQ's own worker classes, and the FastWorker run with FastWorker subclasses under RQ's
   worker class names (:mod:`.workers`). The two runs go side by side.
4. Compares them per test id: a test that passes with the control and fails with FastWorker must
   be listed in ``known_differences.txt``; a listed test that passes is a stale entry. Either
   one, unexplained or stale, after one serial re-run of the FastWorker side, fails the command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rq_suite.patches import CONTROL, FAST, PORTS_ENV, WORKER_ENV
from tests.rq_suite.plugin import PATHS_LOCK_ENV, SCRATCH_ENV
from tests.rq_suite.verdict import (
    TITLES,
    Known,
    Outcomes,
    closing_line,
    compare,
    print_report,
    read_known,
)
from tests.servers import RedisProc, start_redis

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "rq-suite"

#: RQ's test modules about what a worker does with a job (the first 13), and the other modules
#: whose tests run a worker on jobs FastWorker claims to handle as RQ does: rate limits,
#: webhooks, groups, the intermediate queue and worker registration.
MODULES = (
    "test_worker.py",
    "test_retry.py",
    "test_callbacks.py",
    "test_dependencies.py",
    "test_job_dependency.py",
    "test_job_lifecycle.py",
    "test_results.py",
    "test_executions.py",
    "test_commands.py",
    "test_timeouts.py",
    "test_scheduler.py",
    "test_repeat.py",
    "test_registry.py",
    "test_rate_limit.py",
    "test_webhooks.py",
    "test_intermediate_queue.py",
    "test_worker_registration.py",
    "test_group.py",
)

#: pytest's configuration for RQ's suite (RQ's sdist carries none): RQ's markers.
PYTEST_INI = """\
[pytest]
markers =
    slow: RQ's slow tests (on: RUN_SLOW_TESTS_TOO=1)
    ssl_test: RQ's TLS tests (off: no RUN_SSL_TESTS)
"""
#: Seconds one test may run before its stacks are dumped and it is killed.
TEST_TIMEOUT = 180

#: pytest plugins of a run, loaded by name with entry-point autoloading off.
PLUGINS = ("xdist.plugin", "rq_suite.plugin")


# -- the suite ----------------------------------------------------------------------------------


def fetch_suite(version: str, cache: Path = CACHE) -> Path:
    """The folder holding RQ ``version``'s ``tests/`` and a ``pytest.ini``; fetched once."""
    root = cache / f"rq-{version}"
    if not (root / "tests" / "__init__.py").exists():
        sdist = cache / f"rq-{version}.tar.gz"
        if not sdist.exists():
            logger.info("rq-suite: fetching the sdist of rq %s with pip", version)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
                + [f"rq=={version}", "--dest", str(cache)],
                check=True,
            )
        _extract_tests(sdist, root, f"rq-{version}/tests/")
    (root / "pytest.ini").write_text(PYTEST_INI)
    return root


def _extract_tests(sdist: Path, root: Path, prefix: str) -> None:
    """Extract the members under ``prefix`` of ``sdist`` into ``root/tests`` (all or nothing)."""
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=sdist.parent))
    try:
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise RuntimeError(f"{sdist.name} holds no {prefix}")
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on
                archive.extractall(staging, members=members, filter="data")
            else:
                archive.extractall(staging, members=members)  # the sdist pip just fetched from the index
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / "tests", ignore_errors=True)
        (staging / prefix).rename(root / "tests")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- running ------------------------------------------------------------------------------------


@contextmanager
def redis_servers(count: int, directory: Path) -> Iterator[list[RedisProc]]:
    """``count`` private redis-servers on free ports, killed on exit."""
    servers: list[RedisProc] = []
    try:
        for index in range(count):
            servers.append(start_redis(directory / f"redis{index}"))
        yield servers
    finally:
        for server in servers:
            server.kill()


def pytest_command(root: Path, report: Path, workers: int, selection: Sequence[str]) -> list[str]:
    """The pytest command line of one run (``cwd`` is ``root``)."""
    command = [sys.executable, "-m", "pytest", "-c", str(root / "pytest.ini"), "--rootdir", str(root)]
    # Only the plugins the run needs (autoloading is off): whatever else the venv holds stays out.
    for plugin in PLUGINS:
        command += ["-p", plugin]
    command += ["-p", "no:cacheprovider", "-q", "-rN"]
    command += ["--rq-suite-fork", "--rq-suite-timeout", str(TEST_TIMEOUT)]
    command += ["--rq-suite-report", str(report)]
    if workers > 0:
        command += ["-n", str(workers)]
    return command + list(selection)


def pytest_env(root: Path, kind: str, ports: Sequence[int], lock: Path) -> dict[str, str]:
    """The environment of one run: the patches on, this run's servers, RQ's slow tests on."""
    env = dict(os.environ)
    # RQ's suite first (its package is `tests`), then this harness's sitecustomize, then this
    # checkout's packages (ahead of wherever an editable install points).
    paths = [str(root), str(HERE / "site"), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # RQ's subprocess tests run `rqworker`: this interpreter's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env[PORTS_ENV] = ",".join(str(port) for port in ports)
    env[WORKER_ENV] = kind
    env[PATHS_LOCK_ENV] = str(lock)
    env[SCRATCH_ENV] = str(lock.parent)
    env["RUN_SLOW_TESTS_TOO"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # FastWorker reads its settings from the environment; none of them may name the default Redis.
    env["REDIS_URL"] = f"redis://127.0.0.1:{ports[0]}/0"
    env.pop("REDIS_SENTINELS", None)
    return env


@dataclass
class Run:
    """One pytest run of the suite, started in the background."""

    kind: str
    report: Path
    log: Path
    process: subprocess.Popen[bytes]
    started: float

    def stop(self) -> None:
        """Kill pytest if it still runs (the other run failed)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait(self) -> dict[str, dict[str, Any]]:
        """Wait for pytest; its per-test outcomes."""
        self.process.wait()
        logger.info("rq-suite: %s run done in %.0fs", self.kind, time.monotonic() - self.started)
        if not self.report.exists():
            raise RuntimeError(
                f"the {TITLES[self.kind]} run wrote no report (pytest exited {self.process.returncode}); "
                f"see {self.log}"
            )
        tests: dict[str, dict[str, Any]] = json.loads(self.report.read_text())["tests"]
        return tests


def start_run(
    kind: str, root: Path, ports: Sequence[int], workers: int, selection: Sequence[str], name: str, lock: Path
) -> Run:
    """Start pytest for ``kind`` in the background, its output in ``.cache/rq-suite/logs``."""
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report, log = logs / f"{name}.json", logs / f"{name}.log"
    report.unlink(missing_ok=True)
    command = pytest_command(root, report, workers, selection)
    logger.info("rq-suite: %s run: %s", kind, " ".join(command))
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=pytest_env(root, kind, ports, lock), stdout=out, stderr=subprocess.STDOUT
        )
    return Run(kind, report, log, process, time.monotonic())


# -- the command --------------------------------------------------------------------------------


def run_both(
    root: Path, selection: Sequence[str], workers: int, serial: bool, known: dict[str, Known]
) -> Outcomes:
    """Both runs on their own servers, then one serial re-run of what would fail the command.

    The re-run covers the FastWorker side of unexplained and stale tests: a timing-sensitive
    test that lost a race on the busy machine gets a quiet second try.
    """
    per_run = max(1, workers)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rq-suite-")))
        servers = stack.enter_context(redis_servers(2 * per_run, directory))
        ports = {CONTROL: [s.port for s in servers[:per_run]], FAST: [s.port for s in servers[per_run:]]}
        # Tests that write fixed paths under /tmp take turns through this file, across both runs.
        lock = directory / "fixed-paths.lock"
        results: dict[str, dict[str, dict[str, Any]]] = {}
        kinds = (CONTROL, FAST)
        if serial:
            for kind in kinds:
                results[kind] = start_run(kind, root, ports[kind], workers, selection, kind, lock).wait()
        else:
            runs = [start_run(kind, root, ports[kind], workers, selection, kind, lock) for kind in kinds]
            for run in runs:
                stack.callback(run.stop)
            # Whichever ends first is read first: a run that fails to start stops the other at once.
            while len(results) < len(runs):
                for run in runs:
                    if run.kind not in results and run.process.poll() is not None:
                        results[run.kind] = run.wait()
                time.sleep(0.2)
        control, fast = results[CONTROL], results[FAST]
        verdict = compare(control, fast, known, complete=False)
        doubtful = sorted(set(verdict.unexplained) | {t for t in verdict.stale if t in fast})
        reran: dict[str, str] = {}
        if doubtful:
            logger.info("rq-suite: re-running %d test(s) with FastWorker", len(doubtful))
            again = start_run(FAST, root, ports[FAST][:1], 0, doubtful, "fast-rerun", lock).wait()
            for test in doubtful:
                second = again.get(test, {"outcome": "error", "reason": "not run again", "usage": {}})
                reran[test] = f"{fast[test]['outcome']}, then {second['outcome']}"
                fast[test] = second
    return Outcomes(control, fast, reran)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both passes, print the comparison; 1 on an unexplained difference or a stale entry."""
    parser = argparse.ArgumentParser(prog="make test-rq", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--workers", type=int, default=2, help="xdist workers per run (0: none)")
    parser.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    parser.add_argument("--serial", action="store_true", help="run the control, then FastWorker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    started = time.monotonic()
    version = importlib.metadata.version("rq")
    known = read_known()
    root = fetch_suite(version)
    missing = [module for module in MODULES if not (root / "tests" / module).exists()]
    if missing:
        raise SystemExit(f"rq {version}'s tests have no {', '.join(missing)}: update MODULES")
    selection = [f"tests/{module}" for module in MODULES]
    if args.keyword:
        selection += ["-k", args.keyword]

    outcomes = run_both(root, selection, args.workers, args.serial, known)
    verdict = compare(outcomes.control, outcomes.fast, known, complete=not args.keyword)
    print_report(
        f"rq-suite: rq {version}, {len(MODULES)} test modules, slow tests on, each test forked",
        outcomes,
        verdict,
        known,
    )

    problems = []
    tally = Counter(entry["outcome"] for entry in outcomes.control.values())
    if not tally:
        problems.append("the control run ran no test")
    elif not tally["passed"] and (tally["failed"] or tally["error"]):
        problems.append("the control run passed no test (the harness is broken)")
    if verdict.unexplained:
        problems.append(f"{len(verdict.unexplained)} unexplained difference(s)")
    if verdict.stale:
        problems.append(f"{len(verdict.stale)} stale entr{'y' if len(verdict.stale) == 1 else 'ies'}")
    elapsed = time.monotonic() - started
    if problems:
        print(f"\nrq-suite: FAILED: {' and '.join(problems)} ({elapsed:.0f}s); logs in {CACHE / 'logs'}")
    else:
        print(
            f"\nrq-suite: OK: {len(verdict.explained)} known differences, none unexplained ({elapsed:.0f}s)"
        )
    print(closing_line(outcomes, verdict))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
