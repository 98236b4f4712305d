"""Crash test: member jobs while a worker is SIGKILLed mid-job again and again and restarted.

Smaller than the full run (``python -m bench.crash``: 2,000 jobs, 10 kills, 15 s heartbeat
timeout) to fit the test budget: 300 jobs, 4 kills, a 5 s heartbeat timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash import run_crash
from tests.servers import RedisProc

JOBS = 300
KILLS = 4
HEARTBEAT_TIMEOUT = 5.0


@pytest.mark.slow
def test_every_job_finishes_once_despite_repeated_kills(
    redis_proc: RedisProc, r: object, postgres_url: str, tmp_path: Path
) -> None:
    report = run_crash(
        redis_proc.url,
        postgres_url,
        jobs=JOBS,
        kills=KILLS,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        rate=60.0,
        log_dir=tmp_path,
        timeout=120,
    )
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert report.finished == JOBS, logs[-3000:]
    assert report.rows == JOBS and report.distinct_rows == JOBS
    assert len(report.kills) == KILLS
    assert report.abandoned >= 1, "no kill landed on a running job"
    # Each abandoned job went back to its queue within the heartbeat timeout, and ran again after.
    assert report.requeue_delays and max(report.requeue_delays.values()) <= HEARTBEAT_TIMEOUT
    assert report.restarted_late == []
    assert "job abandoned" in logs
