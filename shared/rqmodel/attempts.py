"""A job's attempts, from RQ's retry counter and the ``maxAttempts`` the producer puts in its meta."""

from __future__ import annotations

from rq.job import Job


def attempts(job: Job, *, running: bool) -> tuple[int, int]:
    """(attempts made, attempts allowed); ``running`` counts the attempt under way or just ended."""
    max_attempts = int(job.meta.get("maxAttempts", 1))
    retries_left = job.retries_left if job.retries_left is not None else max_attempts - 1
    made = max_attempts - 1 - retries_left + (1 if running else 0)
    return max(made, 0), max_attempts
