"""The verdict of an RQ suite run: known differences, the comparison per test id, the report.

``known_differences.txt`` lists the tests of RQ's suite that pass with RQ's workers and fail
with FastWorker, each with a "# deliberate" or "# to fix" mark and a one-line reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rq_suite.patches import CONTROL, FAST

logger = logging.getLogger(__name__)

KNOWN_DIFFERENCES = Path(__file__).resolve().with_name("known_differences.txt")

#: The names of the two runs in the output.
TITLES = {CONTROL: "control (RQ's workers)", FAST: "FastWorker"}
OUTCOMES = ("passed", "failed", "skipped", "error")


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
    loop = constructed = own = none = 0
    own_classes: set[str] = set()
    for entry in results.values():
        usage = entry.get("usage") or {}
        fast = set(usage.get("fast", ()))
        others = set(usage.get("constructed", ())) - fast
        own_classes |= others
        if fast & set(usage.get("worked", ())):
            loop += 1
        elif fast:
            constructed += 1
        elif others:
            own += 1
        else:
            none += 1
    line = (
        f"{loop} tests ran FastWorker's work loop, {constructed} only constructed a FastWorker, "
        f"{own} used RQ's own worker classes only"
    )
    if own_classes:
        line += f" ({', '.join(sorted(own_classes))})"
    return line + f", {none} no worker in the test process"


@dataclass
class Outcomes:
    """Per-test outcomes of both runs, after the re-runs."""

    control: dict[str, dict[str, Any]]
    fast: dict[str, dict[str, Any]]
    #: Re-run tests: "<first outcome>, then <second>".
    reran: dict[str, str]


def _show(test: str, entry: dict[str, Any], prefix: str, note: str = "") -> None:
    print(f"  {prefix}{test}{note}\n      {entry['outcome']}: {entry['reason']}")


def print_report(title: str, outcomes: Outcomes, verdict: Comparison, known: dict[str, Known]) -> None:
    """``title``, the counts of both runs, the differences and what is wrong with them, on stdout."""
    control, fast, reran = outcomes.control, outcomes.fast, outcomes.reran
    print(title)
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
