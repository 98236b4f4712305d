"""Job timeouts on job threads: one watchdog thread raises RQ's JobTimeoutException in the job's thread."""

from __future__ import annotations

import threading
import time

from rq.timeouts import JobTimeoutException

from consumer.worker.execution import WatchdogDeathPenalty


def _run_for(seconds: float, timeout: int | float, outcome: dict[str, object]) -> None:
    try:
        with WatchdogDeathPenalty(timeout, JobTimeoutException, job_id="j"):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.01)
        outcome["result"] = "done"
    except JobTimeoutException as exc:
        outcome["result"] = exc


def test_a_job_past_its_timeout_gets_rqs_exception_in_its_own_thread() -> None:
    outcomes: list[dict[str, object]] = [{} for _ in range(4)]
    threads = [
        threading.Thread(target=_run_for, args=(3.0 if i % 2 else 0.2, 1, outcomes[i])) for i in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started < 2.5
    assert [o["result"] == "done" for o in outcomes] == [True, False, True, False]
    for late in (outcomes[1]["result"], outcomes[3]["result"]):
        assert isinstance(late, JobTimeoutException)
        assert str(late) == "Task exceeded maximum timeout value (1 seconds)"
        assert type(late).__name__ == "JobTimeoutException"


def test_a_disarmed_watch_never_fires() -> None:
    outcome: dict[str, object] = {}
    _run_for(0.05, 1, outcome)
    time.sleep(1.3)  # past the deadline the job would have had
    assert outcome["result"] == "done"


def test_no_timeout_means_none() -> None:
    outcome: dict[str, object] = {}
    _run_for(0.05, -1, outcome)
    assert outcome["result"] == "done"
