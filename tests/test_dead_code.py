"""No dead code in producer/, consumer/ and shared/: vulture's report less tests/vulture_whitelist.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHITELIST = ROOT / "tests" / "vulture_whitelist.py"
PACKAGES = ("producer", "consumer", "shared")
#: ``shared/db.py:136: unused function '_sqlite_pragmas' (60% confidence)``
REPORT_LINE = re.compile(r"^(?P<where>\S+:\d+): unused \w+ '(?P<name>\w+)' \(\d+% confidence\)$")


def vulture(*extra: str) -> list[str]:
    """vulture's report over the packages (and ``extra`` files), one line per finding."""
    done = subprocess.run(
        [sys.executable, "-m", "vulture", *PACKAGES, *extra, "--min-confidence", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 3), done.stderr  # 3: dead code found
    return done.stdout.splitlines()


def whitelisted() -> set[str]:
    """The names ``tests/vulture_whitelist.py`` uses (``_.name``)."""
    tree = ast.parse(WHITELIST.read_text(encoding="utf-8"))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def test_vulture_reports_nothing_beyond_the_whitelist() -> None:
    report = vulture(str(WHITELIST.relative_to(ROOT)))
    assert report == [], "dead code (remove it, or whitelist it with a reason):\n" + "\n".join(report)


def test_every_whitelisted_name_is_one_vulture_reports() -> None:
    reported = set()
    for line in vulture():
        match = REPORT_LINE.match(line)
        assert match is not None, line
        reported.add(match["name"])
    assert reported, "vulture reported nothing at all: the whitelist would hide nothing"
    stale = whitelisted() - reported
    assert stale == set(), f"whitelisted but not reported (used, or gone): {sorted(stale)}"
