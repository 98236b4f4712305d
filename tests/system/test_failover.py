"""Failover end to end: real master, replicas, Sentinels, gunicorn producer and two workers.

The master is SIGKILLed while a client POSTs member jobs; every 202 jobId is then looked up
on the new master and in the database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.failover_scenario import FailoverResult, run_failover

pytestmark = pytest.mark.slow


def _run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    durable: bool,
    extra_env: dict[str, str] | None = None,
) -> FailoverResult:
    directory: Path = tmp_path_factory.mktemp("failover-durable" if durable else "failover-async")
    result = run_failover(directory, durable=durable, extra_env=extra_env)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nfailover {result.summary()}")
    return result


@pytest.fixture(scope="module")
def durable_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FailoverResult:
    """One run with ENQUEUE_MIN_REPLICAS=1."""
    return _run(request, tmp_path_factory, durable=True)


@pytest.fixture(scope="module")
def async_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FailoverResult:
    """One run with plain asynchronous replication (ENQUEUE_MIN_REPLICAS=0)."""
    return _run(request, tmp_path_factory, durable=False)


@pytest.fixture(scope="module")
def threaded_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FailoverResult:
    """Durable enqueue, workers running jobs on four threads each (WORKER_CONCURRENCY=4)."""
    return _run(request, tmp_path_factory, durable=True, extra_env={"WORKER_CONCURRENCY": "4"})


@pytest.fixture(params=["durable_run", "async_run", "threaded_run"])
def failover(request: pytest.FixtureRequest) -> FailoverResult:
    result: FailoverResult = request.getfixturevalue(request.param)
    return result


def test_enqueues_resume_within_ten_seconds_of_the_kill(failover: FailoverResult) -> None:
    assert failover.resume_seconds is not None, failover.diagnostics()
    assert failover.resume_seconds < 10.0, failover.diagnostics()
    # The run straddles the kill: jobs were acknowledged before it and after it.
    assert any(p.status == 202 and p.done < failover.killed_at for p in failover.posts)
    assert any(p.status == 202 and p.sent > failover.killed_at for p in failover.posts)


def test_every_request_gets_202_or_503(failover: FailoverResult) -> None:
    assert failover.failed_requests == 0, [p for p in failover.posts if p.status not in (202, 503)][:5]


def test_no_acknowledged_job_is_left_half_done(failover: FailoverResult) -> None:
    # Each acknowledged job either finished (row written, status finished) or, without
    # durable enqueue only, vanished with the old master; none is stuck queued or started.
    assert failover.stranded == [], failover.diagnostics()
    assert len(failover.finished) + len(failover.lost) == len(failover.acknowledged)


@pytest.mark.parametrize("run", ["durable_run", "threaded_run"])
def test_durable_enqueue_loses_no_acknowledged_job(request: pytest.FixtureRequest, run: str) -> None:
    result: FailoverResult = request.getfixturevalue(run)
    assert len(result.acknowledged) > 50
    assert result.lost == [], result.diagnostics()
    assert result.finished == set(result.acknowledged), result.diagnostics()


def test_every_worker_is_alive_and_processing_afterwards(failover: FailoverResult) -> None:
    assert all(failover.workers_alive), failover.diagnostics()
    assert all(count > 0 for count in failover.workers_after.values()), failover.workers_after
    for name in failover.worker_names:
        log = failover.logs[name]
        assert "lost the Redis master" in log and "Redis master back" in log
