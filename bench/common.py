"""Shared helpers of the benchmarks: a private redis-server, timing, and the result table."""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from shared.stack import procs


@contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        port = procs.free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", tmp, "--logfile", f"{tmp}/redis.log"]  # fmt: skip
        proc = procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis(port=port)
        try:
            if not procs.wait_until(lambda: bool(client.ping()), 10):
                raise SystemExit("redis-server did not start")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            procs.stop(proc)


def redis_version() -> str:
    """The version of the ``redis-server`` on PATH."""
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return next((part[2:] for part in version if part.startswith("v=")), "?")


def machine() -> str:
    """A one-line description of this machine and its Redis."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(__import__("os").sched_getaffinity(0))
    return f"{cores} cores ({cpu}), Python {platform.python_version()}, Redis {redis_version()} on loopback"


def today() -> str:
    """Today's date (UTC), for the README's figures."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else float("inf")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def row(what: str, ours: str, baseline: str, ratio: float | None = None, note: str = "") -> str:
    """One markdown table row: what, ours, baseline, ratio."""
    # Two decimals near parity, where one would round 0.97x up to "1.0x".
    shown = "" if ratio is None else f"{ratio:.2f}x" if ratio < 2 else f"{ratio:.1f}x"
    return f"| {what} | {ours} | {baseline} | {shown} | {note} |"


HEADER = "| what | redis-archive | baseline | ratio | note |\n|---|---|---|---|---|"


def print_rows(
    measure: Callable[[str, Any], list[str]], description: str | None, *, seconds: bool = False
) -> None:
    """A benchmark module's ``main``: parse --scale (or --seconds), print its rows on a private Redis."""
    parser = argparse.ArgumentParser(description=description)
    if seconds:
        parser.add_argument("--seconds", type=int, default=10, help="length of each run")
    else:
        parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts")
    args = parser.parse_args()
    amount = args.seconds if seconds else args.scale
    with private_redis() as url:
        print(HEADER)
        for line in measure(url, amount):
            print(line)
