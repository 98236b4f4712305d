"""Semantic parity: the same job behaviours run by RQ's own workers and by FastWorker end in the
same Redis state (statuses, registries, results, TTLs, retries, callbacks, worker counters)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Callback, Queue, Retry, SimpleWorker, Worker
from rq.command import send_kill_horse_command, send_stop_job_command
from rq.job import Dependency, Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker.base import DequeueStrategy

from consumer.worker import FastWorker
from consumer.worker.protocol import ClaimProtocol
from shared.rqmodel import restore as restore_module
from shared.rqmodel.keys import KEYS
from shared.rqmodel.restore import restore, restored_state
from tests import parity_jobs as pj
from tests.servers import ROOT

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
    """TTLs and registry scores, coarse enough to compare across runs."""
    if seconds is None:
        return None
    if seconds in (-1, float("inf")):
        return "forever"
    if seconds == -2:
        return "gone"
    return int(round(seconds / 10.0)) * 10


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
        worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
        return worker

    def snapshot(self) -> None:
        """Record the normalized state of every job, registry and key."""
        self.states.append(snapshot(self.r, self.queue, self.jobs, self.worker_names))


def snapshot(r: redis.Redis, queue: Queue, jobs: dict[str, Job], worker_names: list[str]) -> dict[str, Any]:
    """Everything a dashboard or ``rq info`` could see, with ids and times normalized."""
    t = time.time()
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
        entry: dict[str, Any] = {"in_queue": enqueued.id in queue.get_job_ids()}
        for name, registry in registries.items():
            score = r.zscore(registry.key, enqueued.id)
            if name == "started":
                members = [m.decode() for m in r.zrange(registry.key, 0, -1)]
                entry["started"] = any(m.startswith(enqueued.id + ":") for m in members)
            elif score is not None:
                entry[name] = _bucket(score - t) if score != float("inf") else "forever"
        if not r.exists(enqueued.key):
            entry["job"] = "deleted"
            state[label] = entry
            continue
        job = Job.fetch(enqueued.id, connection=r, serializer=JSONSerializer)
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
            job_ttl=_bucket(r.ttl(job.key)),
            results_ttl=_bucket(r.ttl(f"rq:results:{job.id}")) if results else None,
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
    state["key_shapes"] = key_shapes(r, jobs, worker_names)
    return state


def key_shapes(r: redis.Redis, jobs: dict[str, Job], worker_names: list[str]) -> list[str]:
    """Every RQ key in Redis with job ids and worker names replaced by their labels."""
    names = {job.id: f"<{label}>" for label, job in jobs.items()}
    names.update({name: "<worker>" for name in worker_names})
    shapes = set()
    # RQ's data model lives under rq:; other parts of the system write archive: keys of their own.
    for raw in r.keys("rq:*"):
        key = raw.decode()
        if key.startswith(("rq:scheduler", "rq:clean_registries", "rq:maintenance")):
            continue
        for value, label in names.items():
            key = key.replace(value, label)
        if "<worker>" not in key:
            # A job's keys expire (or not) alike: the dependencies set with the job, for one.
            key += f" ttl={_bucket(r.ttl(raw))}"
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


# --- batch mode: the next batch is claimed while the current one runs ----------------------------


def _batch_run(r: redis.Redis, jobs: list[Job], worker: FastWorker, **work: Any) -> dict[str, Any]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.work(burst=True, **work)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    return {
        "runs": int(r.get("runs") or 0),
        "statuses": [job.get_status(refresh=True).value for job in jobs],
        "queued": r.llen(queue.key),
        "started": r.zcard(queue.started_job_registry.key),
        "executions": r.scard(worker.executions_key),
    }


def test_batch_runs_every_claimed_job_when_stopped(r: redis.Redis, worker_env: Any) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    jobs = [queue.enqueue(pj.count, "runs") for _ in range(3)] + [queue.enqueue(pj.stop_worker)]
    jobs += [queue.enqueue(pj.count, "runs") for _ in range(16)]
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer, batch=4)
    state = _batch_run(r, jobs, worker)
    # The stop came in the first batch; the second was claimed already, so it ran too.
    assert state["runs"] == 7
    assert state["statuses"] == ["finished"] * 8 + ["queued"] * 12
    assert (state["queued"], state["started"], state["executions"]) == (12, 0, 0)
    assert r.zcard(KEYS.heartbeats) == 0


def test_batch_stops_at_max_jobs_without_claiming_more(r: redis.Redis, worker_env: Any) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    jobs = [queue.enqueue(pj.count, "runs") for _ in range(20)]
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer, batch=4)
    state = _batch_run(r, jobs, worker, max_jobs=6)
    assert state["runs"] == 6
    assert state["statuses"] == ["finished"] * 6 + ["queued"] * 14
    assert (state["queued"], state["started"], state["executions"]) == (14, 0, 0)


def test_batch_puts_back_a_claim_whose_reply_was_lost(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    jobs = [queue.enqueue(pj.count, "runs") for _ in range(20)]
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer, batch=4)
    real_start = ClaimProtocol._start_claim
    calls = {"n": 0}

    def lose_the_first_look_ahead_reply(self: Any, pending: Any, wanted: int) -> Any:
        inflight = real_start(self, pending, wanted)
        calls["n"] += 1
        if calls["n"] == 1:  # the claim sent while the first batch ran

            def lost(count: int) -> list[Any]:
                inflight.checkout.connection.disconnect()
                inflight.checkout.pool.release(inflight.checkout.connection)
                raise redis.exceptions.ConnectionError("reply lost")

            inflight.checkout.read = lost
        return inflight

    monkeypatch.setattr(ClaimProtocol, "_start_claim", lose_the_first_look_ahead_reply)
    state = _batch_run(r, jobs, worker)
    # The lost claim's four jobs went back to the queue and ran once each, like every other.
    assert worker.failovers == 1
    assert state["runs"] == 20
    assert state["statuses"] == ["finished"] * 20
    assert (state["queued"], state["started"], state["executions"]) == (0, 0, 0)


# --- the claim path's restore against RQ's ------------------------------------------------------


def _jobs_of_every_kind(r: redis.Redis) -> list[Job]:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    parent = queue.enqueue(pj.add, 1, 2)
    jobs = [
        parent,
        queue.enqueue(pj.add, 1, 2, job_timeout=30, result_ttl=60, failure_ttl=90, ttl=600, description="d"),
        queue.enqueue(pj.add, 3, 4, job_timeout=-1, result_ttl=-1, meta={"name": "x", "n": [1, 2]}),
        queue.enqueue(
            pj.fail,
            "no",
            retry=Retry(max=3, interval=[1, 2]),
            on_success=Callback(pj.record_success, timeout=5),
            on_failure=Callback(pj.record_failure),
            on_stopped=Callback(pj.record_stopped, timeout=7),
            at_front=True,
        ),
        queue.enqueue(pj.add, 5, 6, depends_on=parent),
        queue.enqueue(pj.add, 5, 6, depends_on=Dependency(jobs=[parent], allow_failure=True)),
        queue.enqueue_in(timedelta(seconds=30), pj.add, 7, 8),
    ]
    done = queue.enqueue(pj.add, 2, 2)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=1)
    failed = Queue("other", connection=r, serializer=JSONSerializer).enqueue(pj.fail, "boom")
    SimpleWorker(["other"], connection=r, serializer=JSONSerializer).work(burst=True)
    bad_meta = queue.enqueue(pj.add, 1, 1)
    r.hset(bad_meta.key, "meta", b"\x80not json")
    return [*jobs, done, failed, bad_meta]


def test_claim_restore_sets_what_rqs_restore_sets(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs_of_every_kind(r)
    assert len(jobs) == 10
    fast = []
    real_fast_restore = restore_module._restore

    def counted(job: Job, data: dict[bytes, bytes]) -> None:
        real_fast_restore(job, data)
        fast.append(job.id)

    monkeypatch.setattr(restore_module, "_restore", counted)
    for job in jobs:
        raw = r.hgetall(job.key)
        theirs = Job(job.id, connection=r, serializer=JSONSerializer)
        theirs.restore(dict(raw))
        ours = Job(job.id, connection=r, serializer=JSONSerializer)
        restore(ours, dict(raw))
        assert restored_state(ours) == restored_state(theirs), raw
        assert ours.func_name == theirs.func_name and ours.args == theirs.args and ours.meta == theirs.meta
    # Every job but the failed one (RQ's own restore reads its exception text) took the fast path.
    assert len(fast) >= 9


# --- RQ's options and commands ----------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
def test_round_robin_takes_turns_within_a_batch_as_rq_does(
    r: redis.Redis, worker_env: Any, batch: int
) -> None:
    def order(worker_class: Any, **options: Any) -> list[str]:
        r.flushdb()
        queues = [Queue(name, connection=r, serializer=JSONSerializer) for name in ("a", "b", "c")]
        for queue, count in zip(queues, (5, 2, 3), strict=True):
            for i in range(count):
                queue.enqueue(pj.record, "order", f"{queue.name}{i}")
        worker = worker_class(queues, connection=r, serializer=JSONSerializer, **options)
        worker.work(burst=True, dequeue_strategy=DequeueStrategy.ROUND_ROBIN)
        return [label.decode() for label in r.lrange("order", 0, -1)]

    expected = order(SimpleWorker)
    assert expected == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "c2", "a3", "a4"]
    assert order(FastWorker, batch=batch) == expected


def test_kill_horse_command_fails_the_running_job_as_a_killed_horse_does(
    r: redis.Redis, worker_env: Any
) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    job = queue.enqueue(pj.sleep, 30)
    after = queue.enqueue(pj.add, 1, 2)
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer)

    def send_when_running() -> None:
        deadline = time.monotonic() + 10
        while job.get_status(refresh=True) != JobStatus.STARTED and time.monotonic() < deadline:
            time.sleep(0.02)
        send_kill_horse_command(r, worker.name)

    sender = threading.Thread(target=send_when_running)
    sender.start()
    started = time.monotonic()
    worker.work(burst=True, logging_level="WARNING")
    sender.join()
    assert time.monotonic() - started < 15  # the 30 s job did not run to its end
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert job.id in queue.failed_job_registry
    assert "kill-horse" in (job.latest_result().exc_string or "")
    assert after.get_status(refresh=True) == JobStatus.FINISHED  # the worker carried on


def test_plain_rq_worker_with_fast_worker_logs_on_rqs_logger(
    r: redis.Redis, redis_url: str, tmp_path: Any
) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    queue.enqueue(pj.add, 1, 2)
    argv = [sys.executable, "-m", "rq.cli", "worker", "--url", redis_url, "-S", "json"]
    argv += ["-w", "consumer.worker.FastWorker", "--burst", QUEUE]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    # Without a settings module: RQ's own handler shows the worker's INFO lines, in RQ's format.
    assert re.search(r"\d\d:\d\d:\d\d Worker .*: done, quitting", out.stdout), out.stdout + out.stderr
    quiet = subprocess.run(
        [*argv[:-1], "--logging_level", "WARNING", QUEUE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert quiet.returncode == 0 and "done, quitting" not in quiet.stdout + quiet.stderr
