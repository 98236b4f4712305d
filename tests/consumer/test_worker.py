"""Semantic parity: the same job behaviours run by RQ's own workers and by FastWorker end in the
same Redis state (statuses, registries, results, TTLs, retries, callbacks, worker counters)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Callback, Queue, Retry, SimpleWorker, Worker
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now

from consumer.worker import FastWorker
from shared.keys import KEYS
from tests import parity_jobs as pj

QUEUE = "parity"

WorkerFactory = Callable[[Queue, redis.Redis], Any]

WORKERS: dict[str, WorkerFactory] = {
    "rq-SimpleWorker": lambda q, r: SimpleWorker([q], connection=r, serializer=JSONSerializer),
    "rq-Worker": lambda q, r: Worker([q], connection=r, serializer=JSONSerializer),
    "FastWorker": lambda q, r: FastWorker([q], connection=r, serializer=JSONSerializer),
    "FastWorker-threads": lambda q, r: FastWorker(
        [q], connection=r, serializer=JSONSerializer, concurrency=3
    ),
    "FastWorker-batch": lambda q, r: FastWorker([q], connection=r, serializer=JSONSerializer, batch=4),
}


def _bucket(seconds: float | None) -> Any:
    """A ttl or registry score relative to its job's own timestamp, in tens of seconds.

    Each is measured from the moment RQ set it (a job's end, or its enqueueing), never from
    the moment the test looks, so that a slow machine cannot shift it.
    """
    if seconds is None:
        return None
    if seconds in (-1, float("inf")):
        return "forever"
    if seconds == -2:
        return "gone"
    return int(round(seconds / 10.0)) * 10


def _expires_in(r: redis.Redis, key: str, anchor: float) -> Any:
    """Seconds from ``anchor`` to ``key``'s expiry (``forever``, ``gone``)."""
    at = r.pexpiretime(key)
    if at in (-1, -2):
        return _bucket(at)
    return _bucket(at / 1000 - anchor)


def _anchor(job: Job | None, fallback: float) -> float:
    """The job's own latest timestamp: its end, else its enqueueing or creation."""
    if job is None:
        return fallback
    stamp = job.ended_at or job.enqueued_at or job.created_at
    return stamp.timestamp() if stamp is not None else fallback


class Run:
    """One worker class running one scenario on a flushed Redis."""

    def __init__(self, r: redis.Redis, factory: WorkerFactory) -> None:
        self.r = r
        self.factory = factory
        self.queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
        self.jobs: dict[str, Job] = {}
        self.worker_names: list[str] = []
        self.states: list[dict[str, Any]] = []

    def enqueue(self, label: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        job = self.queue.enqueue(func, *args, **kwargs)
        self.jobs[label] = job
        return job

    def work(self, with_scheduler: bool = False) -> Any:
        worker = self.factory(self.queue, self.r)
        self.worker_names.append(worker.name)
        # Keys without a job of their own (RQ's clean-up markers) are written as the worker starts.
        self.worked_at = time.time()
        worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
        return worker

    worked_at = 0.0

    def snapshot(self) -> None:
        """Record the normalized state of every job, registry and key."""
        now_or_run = self.worked_at or time.time()
        self.states.append(snapshot(self.r, self.queue, self.jobs, self.worker_names, now_or_run))


def snapshot(
    r: redis.Redis, queue: Queue, jobs: dict[str, Job], worker_names: list[str], worked_at: float
) -> dict[str, Any]:
    """Everything a dashboard or ``rq info`` could see, with ids and times normalized.

    Times are taken relative to each job's own timestamps (keys without a job: to the start of
    the last worker run), never to the moment of the snapshot.
    """
    fetched: dict[str, Job | None] = {}
    for label, enqueued in jobs.items():
        exists = r.exists(enqueued.key)
        fetched[label] = Job.fetch(enqueued.id, connection=r, serializer=JSONSerializer) if exists else None
    registries = {
        "started": queue.started_job_registry,
        "finished": queue.finished_job_registry,
        "failed": queue.failed_job_registry,
        "scheduled": queue.scheduled_job_registry,
        "deferred": queue.deferred_job_registry,
        "canceled": queue.canceled_job_registry,
    }
    state: dict[str, Any] = {}
    for label, enqueued in jobs.items():
        anchor = _anchor(fetched[label], worked_at)
        entry: dict[str, Any] = {"in_queue": enqueued.id in queue.get_job_ids()}
        for name, registry in registries.items():
            score = r.zscore(registry.key, enqueued.id)
            if name == "started":
                members = [m.decode() for m in r.zrange(registry.key, 0, -1)]
                entry["started"] = any(m.startswith(enqueued.id + ":") for m in members)
            elif score is not None:
                entry[name] = _bucket(score - anchor) if score != float("inf") else "forever"
        job = fetched[label]
        if job is None:
            entry["job"] = "deleted"
            state[label] = entry
            continue
        results = Result.all(job, serializer=JSONSerializer)
        latest_failure = next((res for res in results if res.type == Result.Type.FAILED), None)
        error = None
        if latest_failure is not None and latest_failure.exc_string:
            lines = [ln for ln in latest_failure.exc_string.strip().splitlines() if ln.strip()]
            error = re.split(r"[:(]", lines[-1])[0].strip().rsplit(".", 1)[-1] if lines else ""
        entry.update(
            status=job.get_status().value,
            retries_left=job.retries_left,
            number_of_retries=job.number_of_retries,
            result_types=[res.type.name for res in results],
            return_values=[res.return_value for res in results],
            error=error,
            job_ttl=_expires_in(r, job.key, anchor),
            results_ttl=_expires_in(r, f"rq:results:{job.id}", anchor) if results else None,
            started_at=job.started_at is not None,
            ended_at=job.ended_at is not None,
            worker_name=job.worker_name in worker_names if job.worker_name else None,
            success_callback=r.get(f"parity:success:{job.id}"),
            failure_callback=r.get(f"parity:failure:{job.id}"),
            stopped_callback=r.get(f"parity:stopped:{job.id}"),
        )
        state[label] = entry
    counters = []
    for name in worker_names:
        data = r.hgetall(f"rq:worker:{name}")
        counters.append(
            (
                int(data.get(b"successful_job_count", 0)),
                int(data.get(b"failed_job_count", 0)),
                b"death" in data,
            )
        )
    state["workers"] = counters
    state["executions"] = len(r.keys("rq:execution:*")) + len(r.keys("rq:executions:*"))
    state["worker_executions"] = len(r.keys("rq:worker:*:executions"))
    state["intermediate"] = r.llen(queue.intermediate_queue_key)
    anchors = {job.id: _anchor(fetched[label], worked_at) for label, job in jobs.items()}
    state["key_shapes"] = key_shapes(r, jobs, worker_names, anchors, worked_at)
    return state


def key_shapes(
    r: redis.Redis, jobs: dict[str, Job], worker_names: list[str], anchors: dict[str, float], worked_at: float
) -> list[str]:
    """Every RQ key in Redis with job ids and worker names replaced by their labels."""
    names = {job.id: f"<{label}>" for label, job in jobs.items()}
    names.update({name: "<worker>" for name in worker_names})
    shapes = set()
    # RQ's data model lives under rq:; other parts of the system write archive: keys of their own.
    for raw in r.keys("rq:*"):
        key = raw.decode()
        if key.startswith(("rq:scheduler", "rq:clean_registries", "rq:maintenance")):
            continue
        anchor = next((at for job_id, at in anchors.items() if job_id in key), worked_at)
        for value, label in names.items():
            key = key.replace(value, label)
        if "<worker>" not in key:
            # A job's keys expire (or not) alike: the dependencies set with the job, for one.
            key += f" ttl={_expires_in(r, raw.decode(), anchor)}"
        shapes.add(key)
    return sorted(shapes)


# -- scenarios ----------------------------------------------------------------------------------


def success(run: Run) -> None:
    run.enqueue("ok", pj.add, 2, 3)
    run.work()
    run.snapshot()


def exception(run: Run) -> None:
    run.enqueue("boom", pj.fail, "boom")
    run.work()
    run.snapshot()


def retry_with_intervals(run: Run) -> None:
    # The first retry is immediate (interval 0), the second waits a second in the scheduled registry.
    run.enqueue("flaky", pj.fail_then_succeed, "parity:runs", 2, retry=Retry(max=2, interval=[0, 1]))
    run.enqueue("hopeless", pj.fail, "never", retry=Retry(max=1, interval=[0]))
    run.work()
    run.snapshot()
    time.sleep(1.1)
    run.work(with_scheduler=True)
    run.snapshot()


def timeout(run: Run) -> None:
    run.enqueue("slow", pj.sleep, 2, job_timeout=1)
    run.work()
    run.snapshot()


def depends_on(run: Run) -> None:
    parent = run.enqueue("parent", pj.add, 1, 1)
    run.enqueue("child", pj.add, 2, 2, depends_on=parent)
    broken = run.enqueue("broken", pj.fail, "parent fails")
    run.enqueue("orphan", pj.add, 0, 0, depends_on=broken)
    run.snapshot()
    run.work()
    run.snapshot()


def callbacks(run: Run) -> None:
    run.enqueue(
        "ok", pj.add, 1, 2, on_success=Callback(pj.record_success), on_failure=Callback(pj.record_failure)
    )
    run.enqueue(
        "boom", pj.fail, "cb", on_success=Callback(pj.record_success), on_failure=Callback(pj.record_failure)
    )
    run.work()
    run.snapshot()


def ttls(run: Run) -> None:
    run.enqueue("short", pj.add, 1, 1, result_ttl=100)
    run.enqueue("forever", pj.add, 2, 2, result_ttl=-1)
    run.enqueue("discarded", pj.add, 3, 3, result_ttl=0)
    run.enqueue("failed", pj.fail, "ttl", failure_ttl=200)
    run.work()
    run.snapshot()


def scheduled(run: Run) -> None:
    run.jobs["due"] = run.queue.enqueue_at(now() - timedelta(seconds=1), pj.add, 5, 5)
    run.jobs["later"] = run.queue.enqueue_in(timedelta(seconds=600), pj.add, 6, 6)
    run.snapshot()
    run.work(with_scheduler=True)
    run.snapshot()


def stop_and_cancel(run: Run) -> None:
    canceled = run.enqueue("canceled", pj.add, 1, 1)
    canceled.cancel()
    target = run.enqueue("stopped", pj.sleep, 10, on_stopped=Callback(pj.record_stopped))

    def stop_when_started() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if target.get_status(refresh=True) == JobStatus.STARTED:
                time.sleep(0.2)
                send_stop_job_command(run.r, target.id, serializer=JSONSerializer)
                return
            time.sleep(0.02)

    stopper = threading.Thread(target=stop_when_started)
    stopper.start()
    started = time.monotonic()
    run.work()
    stopper.join()
    assert time.monotonic() - started < 8, "the job was not stopped"
    run.snapshot()


SCENARIOS = [success, exception, retry_with_intervals, timeout, depends_on, callbacks, ttls, scheduled]

#: RQ's SimpleWorker cannot stop a running job (it has no horse to kill); threads neither.
STOPPERS = ["rq-Worker", "FastWorker"]

_reference: dict[str, list[dict[str, Any]]] = {}


def _states(r: redis.Redis, worker: str, scenario: Callable[[Run], None]) -> list[dict[str, Any]]:
    r.flushall()
    run = Run(r, WORKERS[worker])
    scenario(run)
    return run.states


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("worker", ["rq-Worker", "FastWorker", "FastWorker-threads", "FastWorker-batch"])
def test_same_end_state_as_simple_worker(
    r: redis.Redis, worker_env: Any, worker: str, scenario: Callable[[Run], None]
) -> None:
    key = scenario.__name__
    if key not in _reference:
        _reference[key] = _states(r, "rq-SimpleWorker", scenario)
    expected = _reference[key]
    assert expected, "the scenario recorded nothing"
    assert _diff(_states(r, worker, scenario), expected) == []


def test_stop_and_cancel_like_rq_worker(r: redis.Redis, worker_env: Any) -> None:
    expected = _states(r, "rq-Worker", stop_and_cancel)
    assert expected[-1]["stopped"]["status"] == "stopped"
    assert expected[-1]["canceled"]["status"] == "canceled"
    ours = _states(r, "FastWorker", stop_and_cancel)
    # A forked horse's stop is written from the parent's copy of the job, which never saw the
    # horse set worker_name and ended_at; without a horse both are kept (as SimpleWorker would).
    assert ours[-1]["stopped"].pop("ended_at") is True and ours[-1]["stopped"].pop("worker_name") is True
    expected[-1]["stopped"].pop("ended_at")
    expected[-1]["stopped"].pop("worker_name")
    assert _diff(ours, expected) == []


def test_reference_states_say_what_they_should(r: redis.Redis, worker_env: Any) -> None:
    """The matrix compares like with like; this pins what RQ itself does, so both can't drift."""
    [state] = _states(r, "FastWorker", success)
    assert state["ok"]["status"] == "finished" and state["ok"]["return_values"] == [5]
    assert state["ok"]["finished"] == 500 and state["ok"]["job_ttl"] == 500
    flaky, final = _states(r, "FastWorker", retry_with_intervals)
    assert flaky["flaky"]["status"] == "scheduled" and flaky["flaky"]["retries_left"] == 0
    assert final["flaky"]["status"] == "finished" and final["flaky"]["return_values"][0] == "ok after 3"
    assert final["hopeless"]["status"] == "failed" and final["hopeless"]["error"] == "ValueError"
    [state] = _states(r, "FastWorker", timeout)
    assert state["slow"]["status"] == "failed" and state["slow"]["error"] == "JobTimeoutException"
    assert r.zcard(KEYS.heartbeats) == 0


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_scripts_flushed_mid_run_are_loaded_again(r: redis.Redis, worker_env: Any) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    first = queue.enqueue(pj.add, 1, 1)
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer)
    worker.work(burst=True, max_jobs=1)
    r.script_flush()
    jobs = [queue.enqueue(pj.add, i, i) for i in range(3)]
    worker.work(burst=True)  # the same worker: its script hashes are gone from Redis
    assert [job.return_value(refresh=True) for job in [first, *jobs]] == [2, 0, 2, 4]
    assert r.zcard(queue.finished_job_registry.key) == 4
