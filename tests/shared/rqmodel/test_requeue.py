"""The one requeue: a cut-off job back at the front, an abandoned one with an attempt spent."""

from __future__ import annotations

import redis
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.rqmodel.requeue import Requeued, requeue

QUEUE = "requeue"


def _started(r: redis.Redis, **options: object) -> tuple[Queue, Job, SimpleWorker]:
    """A job taken from its queue and started by a worker, as a claim leaves it."""
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    job = queue.enqueue("tests.parity_jobs.add", 1, 2, **options)
    worker = SimpleWorker([queue], connection=r, serializer=JSONSerializer)
    worker.register_birth()
    r.lrem(queue.key, 0, job.id)
    worker.prepare_execution(job)
    job.worker_name = worker.name
    job.save()
    job.set_status(JobStatus.STARTED)
    return queue, job, worker


def test_a_cut_off_job_goes_back_to_the_front_without_spending_an_attempt(r: redis.Redis) -> None:
    queue, job, _ = _started(r, retry=Retry(max=2))
    other = queue.enqueue("tests.parity_jobs.add", 0, 0)
    assert requeue(r, job, queue, attempt=False) is Requeued.QUEUED
    assert r.lrange(queue.key, 0, -1) == [job.id.encode(), other.id.encode()]
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.retries_left == 2
    assert r.zcard(queue.started_job_registry.key) == 0 and r.keys("rq:execution:*") == []


def test_an_abandoned_job_spends_an_attempt_and_runs_the_hook(r: redis.Redis) -> None:
    queue, job, worker = _started(r, retry=Retry(max=2))
    seen: list[str] = []
    outcome = requeue(r, job, queue, attempt=True, worker=worker.name, before=lambda j: seen.append(j.id))
    assert outcome is Requeued.QUEUED and seen == [job.id]
    job.refresh()
    assert job.retries_left == 1 and job.get_status() == JobStatus.QUEUED
    assert r.smembers(worker.executions_key) == set()
    assert r.zcard(queue.started_job_registry.key) == 0


def test_an_abandoned_job_without_attempts_fails(r: redis.Redis) -> None:
    queue, job, worker = _started(r)
    assert requeue(r, job, queue, attempt=True, worker=worker.name, reason="died") is Requeued.FAILED
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert job.id in queue.failed_job_registry.get_job_ids()
    assert r.llen(queue.key) == 0


def test_a_job_another_worker_runs_now_is_left_to_it(r: redis.Redis) -> None:
    queue, job, dead = _started(r, retry=Retry(max=2))
    # The job was put back and taken by a live worker meanwhile.
    live = SimpleWorker([queue], connection=r, serializer=JSONSerializer)
    live.register_birth()
    live_execution = live.prepare_execution(job)
    job.worker_name = live.name
    job.save()
    assert requeue(r, job, queue, attempt=True, worker=dead.name) is Requeued.SKIPPED
    assert r.smembers(live.executions_key) == {live_execution.composite_key.encode()}
    assert r.zscore(queue.started_job_registry.key, live_execution.composite_key) is not None
    assert r.smembers(dead.executions_key) == set()
    assert job.get_status(refresh=True) == JobStatus.STARTED and job.retries_left == 2


def test_settled_and_queued_jobs_are_left_alone(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    job = queue.enqueue("tests.parity_jobs.add", 1, 2)
    assert requeue(r, job, queue, attempt=False) is Requeued.SKIPPED
    assert r.llen(queue.key) == 1
    r.lpop(queue.key)
    job.set_status(JobStatus.FINISHED)
    assert requeue(r, job, queue, attempt=False) is Requeued.SKIPPED
    assert r.llen(queue.key) == 0
    r.delete(job.key)
    assert requeue(r, job, queue, attempt=False) is Requeued.SKIPPED
