"""The producer's background thread: it also moves due scheduled jobs (RQ's scheduler)."""

from __future__ import annotations

from datetime import timedelta

import redis
from flask import Flask
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now

from producer.background import start_stats_thread
from shared.stack.procs import wait_until


def test_the_background_thread_moves_due_retries_back_to_their_queue(app: Flask, r: redis.Redis) -> None:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue_at(now() - timedelta(seconds=1), "tests.parity_jobs.add", 1, 2)
    assert job.get_status() == JobStatus.SCHEDULED
    stop = start_stats_thread(app)
    try:
        assert wait_until(lambda: queue.job_ids == [job.id], 10)
        holder = r.get("rq:scheduler-lock:member")
        assert holder is not None and holder.startswith(b"producer-")
    finally:
        stop.set()
    # Stopping releases the lock at once (the thread's last round), for the next mover.
    assert wait_until(lambda: r.get("rq:scheduler-lock:member") is None, 10)
