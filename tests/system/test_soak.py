"""The mixed-fault soak, short: every fault once while members flow through two lanes.

``python -m bench.soak`` is the full run (5 minutes, every fault, some twice). Here: a minute
of load with each kind of fault once, databases down 5 s, Redis full 3 s.
"""

from __future__ import annotations

import pytest

from tests.dbservers import mariadb_available, postgres_available
from tests.soak import SHORT_SCHEDULE, SoakReport, run_soak

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (postgres_available() and mariadb_available()), reason="needs PostgreSQL's and MariaDB's servers"
    ),
]


@pytest.fixture(scope="module")
def soak(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SoakReport:
    report = run_soak(
        tmp_path_factory.mktemp("soak"),
        seconds=60.0,
        rate=15.0,
        schedule=SHORT_SCHEDULE,
        db_outage=5.0,
        full_seconds=3.0,
        drain_timeout=150.0,
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + report.render())
    return report


def test_every_kind_of_fault_ran(soak: SoakReport) -> None:
    kinds = {fault.kind.split(" (")[0] for fault in soak.faults}
    assert kinds == {"worker SIGKILL", "Redis master SIGKILL", "PostgreSQL restart", "MariaDB restart",
                     "Redis restart", "Redis full"}  # fmt: skip
    assert len(soak.posts) > 1000


def test_no_acknowledged_member_is_lost_or_written_twice(soak: SoakReport) -> None:
    assert soak.lost == 0, soak.render()
    assert soak.duplicated == 0, soak.render()
    assert all(not lane.failed_jobs for lane in soak.lanes), soak.render()


def test_every_refusal_says_when_to_retry_and_nothing_else_fails(soak: SoakReport) -> None:
    assert soak.refused_without_retry_after == 0, soak.render()
    assert not soak.other, soak.render()


def test_every_process_is_alive_at_the_end(soak: SoakReport) -> None:
    assert soak.dead == [], soak.render()
    # The killed workers came back because `up` restarted them, and it said so.
    for lane in soak.lanes:
        killed = {f.detail.split("/")[1].split(" ")[0] for f in soak.faults if f"{lane.name}/" in f.detail}
        assert killed <= {name for name, _ in lane.restarts}, (lane.name, killed, lane.restarts)


def test_jobs_finish_again_after_every_fault(soak: SoakReport) -> None:
    assert soak.never_recovered == [], soak.render()
    assert all(fault.recovery for fault in soak.faults)


def test_acknowledged_jobs_left_no_trace_of_being_refused(soak: SoakReport) -> None:
    assert sum(len(lane.accepted) for lane in soak.lanes) == sum(lane.rows for lane in soak.lanes)
