"""What a soak observed: per lane and in total, printed as the bench prints it."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rq.job import JobStatus
from sqlalchemy import func, select

from shared.db import make_engine, member
from tests.load import Post
from tests.soak.faults import Fault
from tests.soak.lanes import Lane, accepted_ids, fetch_jobs, row_ids


@dataclass
class LaneResult:
    """What one lane observed."""

    name: str
    posts: list[Post]
    accepted: list[str]
    finished: int
    rows: int
    distinct_rows: int
    lost: list[str]
    #: Rows whose job id was never acknowledged (a 503 after a write that landed).
    unacknowledged_rows: int
    failed_jobs: list[str]
    alive: dict[str, bool]
    restarts: list[tuple[str, int]]
    #: Jobs whose worker died under them and that were retried (the failure callback's lines).
    abandoned: int = 0


@dataclass
class SoakReport:
    """The printed result of a soak."""

    seconds: float
    rate: float
    faults: list[Fault]
    lanes: list[LaneResult]
    drain_seconds: float
    directory: Path

    @property
    def posts(self) -> list[Post]:
        return [p for lane in self.lanes for p in lane.posts]

    @property
    def refusals(self) -> Counter[str]:
        """503s by reason (numbers in the message folded, so that one reason is one line)."""
        return Counter(re.sub(r"\d+", "N", p.reason or "?") for p in self.posts if p.status == 503)

    @property
    def refused_without_retry_after(self) -> int:
        return sum(1 for p in self.posts if p.status == 503 and not p.retry_after)

    @property
    def other(self) -> Counter[str]:
        """Answers that are neither 202 nor 503 (500s, dropped connections), by status and reason."""
        return Counter(f"{p.status} {p.reason}" for p in self.posts if p.status not in (202, 503))

    @property
    def lost(self) -> int:
        return sum(len(lane.lost) for lane in self.lanes)

    @property
    def duplicated(self) -> int:
        return sum(lane.rows - lane.distinct_rows for lane in self.lanes)

    @property
    def dead(self) -> list[str]:
        return [f"{lane.name}/{name}" for lane in self.lanes for name, up in lane.alive.items() if not up]

    @property
    def max_recovery(self) -> float | None:
        values = [v for fault in self.faults for v in fault.recovery.values() if v is not None]
        return max(values) if values else None

    @property
    def never_recovered(self) -> list[str]:
        return [f"{f.kind} ({lane})" for f in self.faults for lane, v in f.recovery.items() if v is None]

    def ok(self) -> bool:
        """What the soak must show: nothing lost or doubled, everyone alive, every refusal answerable."""
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.dead
            and self.refused_without_retry_after == 0
            and not self.other
            and not self.never_recovered
            and all(not lane.failed_jobs for lane in self.lanes)
        )

    def render(self) -> str:
        posts = self.posts
        accepted = sum(len(lane.accepted) for lane in self.lanes)
        lines = [
            f"soak: {self.seconds:.0f}s of load at {self.rate:g} POSTs/s per lane, {len(self.faults)} faults,"
            f" then {self.drain_seconds:.0f}s until every acknowledged job had ended ({self.directory})",
            "",
            "faults (seconds from the start of the load; the fault's length; recovery = from the fault's",
            "start to the end of the first job that started after it began and ended after it ended):",
        ]
        for fault in self.faults:
            recovery = ", ".join(
                f"{lane} {'never' if v is None else f'{v:.1f}s'}" for lane, v in fault.recovery.items()
            )
            length = fault.ended - (fault.began or fault.ended)
            lines.append(
                f"  {fault.at:6.1f}s  {fault.kind} ({length:.1f}s): {fault.detail}; recovery {recovery}"
            )
        lines += [
            "",
            f"requests sent            {len(posts)}",
            f"accepted (202)           {accepted}",
            f"refused (503)            {sum(self.refusals.values())}"
            f" ({self.refused_without_retry_after} without Retry-After)",
        ]
        for reason, count in self.refusals.most_common():
            lines.append(f"    {count:6d}  {reason}")
        lines.append(f"other answers            {sum(self.other.values())}")
        for reason, count in self.other.most_common():
            lines.append(f"    {count:6d}  {reason}")
        lines += [
            f"jobs finished            {sum(lane.finished for lane in self.lanes)}",
            f"jobs failed              {sum(len(lane.failed_jobs) for lane in self.lanes)}",
            f"jobs abandoned by a killed worker, retried  {sum(lane.abandoned for lane in self.lanes)}",
            f"rows written             {sum(lane.rows for lane in self.lanes)}"
            f" ({sum(lane.unacknowledged_rows for lane in self.lanes)} for requests answered 503)",
            f"lost (202, no row)       {self.lost}",
            f"duplicated rows          {self.duplicated}",
            "max fault -> first finished job: "
            + (f"{self.max_recovery:.1f}s" if self.max_recovery is not None else "n/a"),
        ]
        for lane in self.lanes:
            states = ", ".join(
                f"{name} {'alive' if up else 'DEAD'}" for name, up in sorted(lane.alive.items())
            )
            restarted = Counter(name for name, _ in lane.restarts)
            said = ", ".join(f"{name} x{n}" for name, n in sorted(restarted.items())) or "none"
            lines.append(
                f"lane {lane.name}: {len(lane.accepted)} accepted, {lane.rows} rows; processes: {states}; "
                f"restarted by redis-archive up (it said so): {said}"
            )
        lines.append("OK" if self.ok() else "FAILED")
        return "\n".join(lines)


def settled(lane: Lane) -> bool:
    """Every acknowledged job ended (finished or failed) and every finished one has its row."""
    accepted = accepted_ids(lane)
    try:
        jobs = fetch_jobs(lane, accepted)
    except Exception:
        return False
    ended = (JobStatus.FINISHED, JobStatus.FAILED)
    if any(job is not None and job.get_status(refresh=False) not in ended for job in jobs):
        return False
    finished = {
        job.id for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED
    }
    return finished <= row_ids(lane.database_url)


def lane_result(lane: Lane) -> LaneResult:
    """What ``lane`` observed, read from its client, its Redis database and its database."""
    assert lane.client is not None
    accepted = accepted_ids(lane)
    engine = make_engine(lane.database_url)
    try:
        with engine.connect() as conn:
            ids = list(conn.execute(select(member.c.job_id)).scalars())
            count = conn.execute(select(func.count()).select_from(member)).scalar_one()
    finally:
        engine.dispose()
    wanted = set(accepted)
    ours = [job_id for job_id in ids if job_id in wanted]
    jobs = fetch_jobs(lane, accepted)
    finished = sum(
        1 for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FINISHED
    )
    failed = [job.id for job in jobs if job is not None and job.get_status(refresh=False) == JobStatus.FAILED]
    return LaneResult(
        name=lane.name,
        posts=list(lane.client.posts),
        accepted=accepted,
        finished=finished,
        rows=len(ours),
        distinct_rows=len(set(ours)),
        lost=sorted(wanted - set(ours)),
        unacknowledged_rows=int(count) - len(ours),
        failed_jobs=failed,
        alive=lane.alive(),
        restarts=list(lane.restarts),
        abandoned=_abandoned(lane.log),
    )


def _abandoned(log: Path) -> int:
    """Jobs a dead worker left behind and recovery retried, from the failure callback's lines."""
    pattern = re.compile(r"job failed id=(\S+) .*AbandonedJobError")
    with open(log, errors="replace") as lines:
        return len({m.group(1) for line in lines if (m := pattern.search(line))})


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def first_finished_after(lane: Lane, began: float, ended: float) -> float | None:
    """Seconds from ``began`` (monotonic) to the end of ``lane``'s first job after the fault.

    That job started after the fault began and finished after it ended: a job already running
    when the fault began, or one that ended in the moment before the fault took hold, may
    finish without the system having recovered.
    """
    offset = time.time() - time.monotonic()
    start = datetime.fromtimestamp(began + offset, UTC)
    end = datetime.fromtimestamp(ended + offset, UTC)
    ends = [
        _aware(job.ended_at)
        for job in fetch_jobs(lane, accepted_ids(lane))
        if job is not None
        and job.started_at is not None
        and job.ended_at is not None
        and _aware(job.started_at) >= start
        and _aware(job.ended_at) >= end
        and job.get_status(refresh=False) == JobStatus.FINISHED
    ]
    if not ends:
        return None
    return (min(ends) - start).total_seconds()
