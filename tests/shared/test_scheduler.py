"""ScheduledJobMover: RQ's scheduler run in a thread of the monitor and the producer."""

from __future__ import annotations

from datetime import timedelta

import redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now

from shared.scheduler import ScheduledJobMover


def test_due_jobs_go_back_to_their_queue_and_later_ones_wait(r: redis.Redis) -> None:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    due = queue.enqueue_at(now() - timedelta(seconds=1), "tests.parity_jobs.add", 1, 2)
    later = queue.enqueue_in(timedelta(hours=1), "tests.parity_jobs.add", 3, 4)
    assert queue.job_ids == []
    mover = ScheduledJobMover(r, ["member"])
    try:
        assert mover.tick() == {"member"}
    finally:
        mover.close()
    assert queue.job_ids == [due.id]
    assert due.get_status(refresh=True) == JobStatus.QUEUED
    assert later.get_status(refresh=True) == JobStatus.SCHEDULED
    assert queue.scheduled_job_registry.get_job_ids() == [later.id]


def test_one_mover_per_queue_and_the_next_takes_over_when_it_stops(r: redis.Redis) -> None:
    first = ScheduledJobMover(r, ["member", "goods"], role="producer")
    second = ScheduledJobMover(r, ["member", "goods"], role="monitor")
    try:
        assert first.tick() == {"member", "goods"}
        assert second.tick() == frozenset()
        assert first.tick() == {"member", "goods"}  # keeps its locks
        first.close()
        assert second.tick() == {"member", "goods"}
        queue = Queue("goods", connection=r, serializer=JSONSerializer)
        job = queue.enqueue_at(now() - timedelta(seconds=1), "tests.parity_jobs.add", 1, 2)
        second.tick()
        assert queue.job_ids == [job.id]
    finally:
        second.close()
    assert r.keys("rq:scheduler-lock:*") == []
