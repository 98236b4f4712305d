"""Job functions and callbacks for the worker parity matrix (importable by forked horses too)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.job import Job


def add(a: int, b: int) -> int:
    """Return ``a + b``."""
    return a + b


def fail(message: str) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


def sleep(seconds: float) -> str:
    """Sleep, then return ``"slept"``."""
    time.sleep(seconds)
    return "slept"


def sleep_marked(path: str, seconds: float) -> str:
    """Create ``path`` (the job function runs now), sleep, then return ``"slept"``."""
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return "slept"


def fail_then_succeed(key: str, failures: int) -> str:
    """Fail the first ``failures`` runs (counted in Redis under ``key``), then succeed."""
    job = get_current_job()
    assert job is not None
    runs = job.connection.incr(key)
    if runs <= failures:
        raise RuntimeError(f"run {runs} fails")
    return f"ok after {runs}"


def count(key: str) -> int:
    """Count this run in Redis under ``key``; return the count."""
    job = get_current_job()
    assert job is not None
    return int(job.connection.incr(key))


def stop_worker() -> None:
    """Ask the worker running this job for a warm shutdown, as ``kill -TERM`` would."""
    os.kill(os.getpid(), signal.SIGTERM)


def record_success(job: Job, connection: Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """Success callback: remember the result."""
    connection.set(f"parity:success:{job.id}", repr(result))


def record_failure(job: Job, connection: Redis, exc_type: Any, exc_value: Any, tb: Any, *args: Any) -> None:
    """Failure callback: remember the exception."""
    connection.set(f"parity:failure:{job.id}", f"{exc_type.__name__}: {exc_value}")


def record_stopped(job: Job, connection: Redis) -> None:
    """Stopped callback: remember that it ran."""
    connection.set(f"parity:stopped:{job.id}", "1")


def record(key: str, label: str) -> str:
    """Append ``label`` to the Redis list ``key`` (the order jobs ran in); return it."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(key, label)
    return label


def hold(path: str, timeout: float = 60.0) -> str:
    """Create ``path + ".started"``, wait until ``path`` exists, create ``path + ".done"``, return.

    For faults mid-job: the test makes the fault while the job waits, releases it, and sees
    from ``.done`` that the job function has returned (the worker's writes come next).
    """
    with open(path + ".started", "w"):
        pass
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    with open(path + ".done", "w"):
        pass
    return "released"
