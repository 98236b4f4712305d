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
from tests.servers import RedisProc, start_redis

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "rq-suite"
KNOWN_DIFFERENCES = HERE / "known_differences.txt"

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

#: The names of the two runs in the output.
TITLES = {CONTROL: "control (RQ's workers)", FAST: "FastWorker"}
OUTCOMES = ("passed", "failed", "skipped", "error")


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


@dataclass(frozen=True)
class Known:
    """An entry of ``known_differences.txt``."""

    test: str
    kind: str
    reason: str


def read_known(path: Path = KNOWN_DIFFERENCES) -> dict[str, Known]:
    """Entries of ``path``: a ``# deliberate`` or ``# to fix`` line, the test id, an indented reason.

    Other ``#`` lines and blank lines are free comments.
    """
    known: dict[str, Known] = {}
    kind = ""
    test = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{number}"
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            mark = stripped.lstrip("#").strip().lower()
            if mark in ("deliberate", "to fix"):
                kind = mark
            continue
        if line[0].isspace():
            if not test:
                raise ValueError(f"{where}: a reason without a test id above it")
            known[test] = Known(test, kind, stripped)
            test = kind = ""
            continue
        if test:
            raise ValueError(f"{where}: {test} has no reason line")
        if not kind:
            raise ValueError(f"{where}: {stripped} needs a '# deliberate' or '# to fix' line above it")
        if stripped in known:
            raise ValueError(f"{where}: {stripped} is listed twice")
        test = stripped
    if test:
        raise ValueError(f"{path.name}: {test} has no reason line")
    return known


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


# -- comparing ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The verdict on two runs against the known differences."""

    #: Listed tests that pass with the control and fail with FastWorker.
    explained: list[str]
    #: Unlisted tests that pass with the control and fail with FastWorker.
    unexplained: list[str]
    #: Listed tests that pass with FastWorker, or that are not in the suite at all.
    stale: list[str]
    #: Listed tests whose control did not pass (nothing to compare).
    unchecked: list[str]
    #: Tests that pass with FastWorker only.
    fast_only: list[str]


def compare(
    control: dict[str, dict[str, Any]],
    fast: dict[str, dict[str, Any]],
    known: dict[str, Known],
    complete: bool,
) -> Comparison:
    """Compare the runs per test id; ``complete`` when the whole suite ran (no ``-k``)."""
    explained: list[str] = []
    unexplained: list[str] = []
    stale: list[str] = []
    unchecked: list[str] = []
    fast_only: list[str] = []
    for test in sorted(set(control) | set(fast)):
        before = control.get(test, {}).get("outcome")
        after = fast.get(test, {}).get("outcome")
        if before == "passed" and after != "passed":
            (explained if test in known else unexplained).append(test)
        elif test in known and before == "passed":
            stale.append(test)
        elif test in known:
            unchecked.append(test)
        elif after == "passed" and before in ("failed", "error"):
            fast_only.append(test)
    if complete:
        stale += sorted(test for test in known if test not in control and test not in fast)
    return Comparison(explained, unexplained, stale, unchecked, fast_only)


def counts(results: dict[str, dict[str, Any]]) -> str:
    """``N passed, N failed, N skipped, N errors`` of one run."""
    tally = Counter(entry["outcome"] for entry in results.values())
    return ", ".join(f"{tally[o]} {'errors' if o == 'error' else o}" for o in OUTCOMES)


def exercise(results: dict[str, dict[str, Any]]) -> str:
    """How the FastWorker run's tests used workers in the test process."""
    loop = constructed = stock = none = 0
    stock_classes: set[str] = set()
    for entry in results.values():
        usage = entry.get("usage") or {}
        fast = set(usage.get("fast", ()))
        others = set(usage.get("constructed", ())) - fast
        stock_classes |= others
        if fast & set(usage.get("worked", ())):
            loop += 1
        elif fast:
            constructed += 1
        elif others:
            stock += 1
        else:
            none += 1
    line = (
        f"{loop} tests ran FastWorker's work loop, {constructed} only constructed a FastWorker, "
        f"{stock} used RQ's own worker classes only"
    )
    if stock_classes:
        line += f" ({', '.join(sorted(stock_classes))})"
    return line + f", {none} no worker in the test process"


# -- the command --------------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Per-test outcomes of both runs, after the re-runs."""

    control: dict[str, dict[str, Any]]
    fast: dict[str, dict[str, Any]]
    #: Re-run tests: "<first outcome>, then <second>".
    reran: dict[str, str]


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


def _show(test: str, entry: dict[str, Any], prefix: str, note: str = "") -> None:
    print(f"  {prefix}{test}{note}\n      {entry['outcome']}: {entry['reason']}")


def print_report(version: str, outcomes: Outcomes, verdict: Comparison, known: dict[str, Known]) -> None:
    """The counts of both runs, the differences and what is wrong with them, on stdout."""
    control, fast, reran = outcomes.control, outcomes.fast, outcomes.reran
    print(f"rq-suite: rq {version}, {len(MODULES)} test modules, slow tests on, each test forked")
    print(f"  {TITLES[CONTROL] + ':':24} {counts(control)}")
    print(f"  {TITLES[FAST] + ':':24} {counts(fast)}")
    print(f"  FastWorker run: {exercise(fast)}")
    differences = len(verdict.explained) + len(verdict.unexplained)
    print(f"\nPass with the control, fail with FastWorker ({differences}):")
    for test in verdict.explained:
        _show(test, fast[test], f"known [{known[test].kind}] ")
    for test in verdict.unexplained:
        _show(test, fast[test], "UNEXPLAINED ", f" (re-run: {reran[test]})" if test in reran else "")
    if verdict.fast_only:
        print(f"\nPass with FastWorker only ({len(verdict.fast_only)}): " + ", ".join(verdict.fast_only))
    failing = sorted(test for test, entry in control.items() if entry["outcome"] in ("failed", "error"))
    if failing:
        print(f"\nFail with the control ({len(failing)}):")
        for test in failing:
            _show(test, control[test], "")
    if verdict.unchecked:
        print("\nListed, but the control did not pass (not checked): " + ", ".join(verdict.unchecked))
    for test in verdict.stale:
        state = f"passes with FastWorker (re-run: {reran[test]})" if test in fast else "is not in the suite"
        print(f"\nSTALE entry in {KNOWN_DIFFERENCES.name}: {test} {state}")


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
    print_report(version, outcomes, verdict, known)

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


def closing_line(outcomes: Outcomes, verdict: Comparison) -> str:
    """The verdict per RQ test in the plain form CI reads: ``bar: N passed, N failed, N skipped``.

    A test passes the bar when FastWorker passes it, when the control does not, or when it
    fails as listed; it fails the bar when it is unexplained or a stale entry.
    """
    tests = set(outcomes.control) | set(outcomes.fast)
    failing = set(verdict.unexplained) | set(verdict.stale)
    skipped = {t for t in tests - failing if outcomes.control.get(t, {}).get("outcome") == "skipped"}
    passed = len(tests - failing - skipped)
    return f"bar: {passed} passed, {len(failing)} failed, {len(skipped)} skipped"


if __name__ == "__main__":
    sys.exit(main())
