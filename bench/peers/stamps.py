"""Stamps: each job appends ``index start end`` (``time.time()`` seconds) to one file.

A job writes its line with one ``write(2)`` on a file opened with ``O_APPEND``, so lines from
threads and forked processes never interleave, and no peer pays a Redis round trip for it. The
harness reads the file to count finished jobs and to compute rates and latencies. Standard
library only: this module runs inside every peer's environment.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: The environment variable naming the stamps file (set by the harness for workers and producers).
STAMPS_ENV = "BENCH_STAMPS"

_lock = threading.Lock()
_fds: dict[int, int] = {}


def _fd() -> int:
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        with _lock:
            fd = _fds.get(pid)
            if fd is None:
                fd = os.open(os.environ[STAMPS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _fds[pid] = fd
    return fd


def stamp(index: int, start: float) -> None:
    """Record that job ``index`` started at ``start`` and ends now."""
    os.write(_fd(), b"%d %.6f %.6f\n" % (index, start, time.time()))


@dataclass(frozen=True)
class Stamps:
    """The stamps of one run: ``index -> (start, end)``."""

    jobs: dict[int, tuple[float, float]]

    @classmethod
    def read(cls, path: Path) -> Stamps:
        """Parse a stamps file (a missing file is an empty run)."""
        jobs: dict[int, tuple[float, float]] = {}
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(jobs)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                jobs[int(parts[0])] = (float(parts[1]), float(parts[2]))
        return cls(jobs)

    def measured(self) -> dict[int, tuple[float, float]]:
        """The measured jobs (warm-up jobs have negative indices)."""
        return {i: span for i, span in self.jobs.items() if i >= 0}

    def rate(self) -> float | None:
        """Jobs per second from the first job's start to the last job's end (``None`` under 2 jobs)."""
        spans = list(self.measured().values())
        if len(spans) < 2:
            return None
        seconds = max(end for _, end in spans) - min(start for start, _ in spans)
        return len(spans) / seconds if seconds > 0 else None


def count_lines(path: Path) -> int:
    """How many stamps a file holds so far."""
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"\n")
    except FileNotFoundError:
        return 0


def read_returns(path: Path) -> dict[int, float]:
    """The producer's ``index returned_at`` lines of a latency run."""
    returns: dict[int, float] = {}
    for line in path.read_text().splitlines():
        index, returned = line.split()
        returns[int(index)] = float(returned)
    return returns


def latencies(stamps: Stamps, returns: dict[int, float]) -> list[float]:
    """Seconds from each enqueue call's return to its job's start, for jobs that ran."""
    return sorted(stamps.jobs[i][0] - t for i, t in returns.items() if i in stamps.jobs)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted ``values`` (nearest rank)."""
    if not values:
        raise ValueError("no values")
    rank = max(0, min(len(values) - 1, math.ceil(fraction * len(values)) - 1))
    return values[rank]
