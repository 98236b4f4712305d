"""FastWorker's batch mode, its claim path's restore against RQ's, and RQ's options and commands
(round robin, kill-horse, RQ's logger)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection
from rq import Callback, Queue, Retry, SimpleWorker
from rq.command import send_kill_horse_command
from rq.exceptions import StopRequested
from rq.job import Dependency, Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker.base import DequeueStrategy

from consumer.worker import FastWorker
from consumer.worker.protocol import ClaimProtocol
from shared import stats
from shared.connections import UNAVAILABLE_ERRORS
from shared.keys import KEYS
from shared.rqmodel import restore as restore_module
from shared.rqmodel.restore import restore
from shared.rqmodel.scripts import WORKER_SCRIPTS
from shared.stack.procs import free_port
from tests import parity_jobs as pj
from tests.servers import ROOT, RedisProc, start_redis

QUEUE = "parity"


# --- batch mode: the next batch is claimed while the current one runs ----------------------------


def _batch_run(r: redis.Redis, jobs: list[Job], worker: FastWorker, **work: Any) -> dict[str, Any]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.work(**{"burst": True, **work})
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
    real_start = ClaimProtocol.send_claim
    calls = {"n": 0}

    def lose_the_first_look_ahead_reply(self: Any, pending: Any, wanted: int) -> Any:
        inflight = real_start(self, pending, wanted)
        calls["n"] += 1
        if calls["n"] == 1:  # the claim sent while the first batch ran
            held = self.held

            def lost() -> list[Any]:
                del held.read  # the next reads are real again
                held.drop()
                raise redis.exceptions.ConnectionError("reply lost")

            held.read = lost
        return inflight

    monkeypatch.setattr(ClaimProtocol, "send_claim", lose_the_first_look_ahead_reply)
    state = _batch_run(r, jobs, worker)
    # The lost claim's four jobs went back to the queue and ran once each, like every other.
    assert worker.faults.failovers == 1
    assert state["runs"] == 20
    assert state["statuses"] == ["finished"] * 20
    assert (state["queued"], state["started"], state["executions"]) == (0, 0, 0)


# --- waiting for work: the claim rides behind the blocking wait ---------------------------------


def _stats(r: redis.Redis) -> dict[str, int]:
    return {
        name: int(r.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("blmove", "evalsha")
    }


def test_an_idle_worker_claims_a_new_job_without_a_second_round_trip(r: redis.Redis, worker_env: Any) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer)
    assert worker.protocol.finish_and_claim([], 1) == []  # the scripts are loaded
    r.config_resetstat()
    claimed: list[Any] = []
    waiter = threading.Thread(target=lambda: claimed.extend(worker.protocol.wait_and_claim(queue.key, 10, 1)))
    waiter.start()
    deadline = time.monotonic() + 10
    while int(r.info("clients")["blocked_clients"]) == 0:
        assert time.monotonic() < deadline, "the wait never blocked"
        time.sleep(0.01)
    job = queue.enqueue(pj.add, 1, 2)
    waiter.join(10)
    assert not waiter.is_alive()
    # The claim queued behind the wait ran when the job came: one BLMOVE, one script call.
    assert [started.id for started, _queue, _execution in claimed] == [job.id]
    assert _stats(r) == {"blmove": 1, "evalsha": 1}
    assert job.get_status(refresh=True) == JobStatus.STARTED
    assert (r.llen(queue.key), r.zcard(queue.started_job_registry.key)) == (0, 1)
    assert worker.protocol.unsure is False
    # An empty queue: the wait times out and the claim behind it takes nothing.
    assert worker.protocol.wait_and_claim(queue.key, 0.1, 1) == []


def test_a_stop_that_cuts_the_wait_short_puts_its_claim_back(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    first, second = queue.enqueue(pj.add, 1, 2), queue.enqueue(pj.add, 3, 4)
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer)
    worker.register_birth()
    assert worker.protocol.finish_and_claim([], 0) == []
    held = worker.protocol.held
    # The claim behind the wait must run in the server, not answer NOSCRIPT: earlier tests'
    # workers may not have loaded the scripts on this server.
    held.load_scripts(WORKER_SCRIPTS)

    def interrupted() -> list[Any]:
        # The server ran the wait and the claim; the signal comes before their replies are read.
        deadline = time.monotonic() + 10
        while first.get_status(refresh=True) != JobStatus.STARTED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        del held.read
        held.drop()
        raise StopRequested()

    held.read = interrupted
    with pytest.raises(StopRequested):
        worker.protocol.wait_and_claim(queue.key, 10, 1)
    assert worker.protocol.unsure is True
    worker.teardown()
    # The job the unread claim took is back at the front of its queue, no attempt spent.
    assert [job_id.decode() for job_id in r.lrange(queue.key, 0, -1)] == [first.id, second.id]
    assert first.get_status(refresh=True) == JobStatus.QUEUED
    assert (r.zcard(queue.started_job_registry.key), r.scard(worker.executions_key)) == (0, 0)


# --- success callbacks' writes ride with the success writes -------------------------------------


def _round_trips_of(r: redis.Redis, jobs: int, monkeypatch: pytest.MonkeyPatch, **options: Any) -> int:
    """Round trips of a burst FastWorker over ``jobs`` jobs counted by ``consumer.events``."""
    r.flushall()
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    for i in range(jobs):
        queue.enqueue(pj.add, i, 1, on_success=Callback("consumer.events.on_success"))
    sent = {"n": 0}
    original = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent["n"] += 1
        original(self, command, check_health)

    worker = FastWorker([queue], connection=r, serializer=JSONSerializer, **options)
    with monkeypatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counted)
        state = _batch_run(r, [], worker)
    assert len(queue.finished_job_registry) == jobs
    assert state["executions"] == 0
    counters = stats.job_counters(r)[QUEUE]
    assert counters["finished"] == jobs
    assert stats.histograms(r, KEYS.duration)[QUEUE].count == jobs
    return sent["n"]


@pytest.mark.parametrize(
    ("options", "bound"), [({}, 1.5), ({"concurrency": 4}, 0.9)], ids=["main-thread", "threads"]
)
def test_success_callback_writes_go_with_the_next_claim(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], bound: float
) -> None:
    # Every job is counted, and counting it costs no round trip of its own. The round trips a
    # job adds: one claim in main-thread mode (about 0.95 measured; 1.95 with a round trip for
    # the stats, as RQ's own path sends them), a share of a claim on threads (0.05; 1.3).
    few, many = _round_trips_of(r, 20, monkeypatch, **options), _round_trips_of(r, 60, monkeypatch, **options)
    assert (many - few) / 40 < bound


def test_a_failed_callback_write_is_logged_and_the_job_still_finishes(
    r: redis.Redis, worker_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    r.set(KEYS.job_stats, "not a hash")  # every HINCRBY on it fails (WRONGTYPE)
    job = queue.enqueue(pj.add, 1, 2, on_success=Callback("consumer.events.on_success"))
    worker = FastWorker([queue], connection=r, serializer=JSONSerializer)
    with caplog.at_level(logging.WARNING):
        _batch_run(r, [job], worker)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == 3
    assert "a success callback's write failed" in caplog.text
    assert r.get(KEYS.job_stats) == b"not a hash"


def test_rqs_own_worker_sends_the_callback_writes_itself(r: redis.Redis, worker_env: Any) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    for i in range(3):
        queue.enqueue(pj.add, i, 1, on_success=Callback("consumer.events.on_success"))
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
    assert stats.job_counters(r)[QUEUE]["finished"] == 3


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


def _restored_state(job: Job) -> dict[str, Any]:
    """The attributes a restore sets, for comparing two restores of the same hash."""
    return {name: value for name, value in vars(job).items() if name not in ("connection", "_serializer")}


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
        assert _restored_state(ours) == _restored_state(theirs), raw
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


# --- waiting on several queues -------------------------------------------------------------------


def test_a_worker_on_several_queues_wakes_for_a_job_on_any_of_them(r: redis.Redis, worker_env: Any) -> None:
    queues = [Queue(name, connection=r, serializer=JSONSerializer) for name in ("high", "default", "low")]
    worker = FastWorker(queues, connection=r, serializer=JSONSerializer)
    keys = [queue.key for queue in queues]
    try:
        # Nothing queued: the wait times out, one blocked BLMOVE per queue stays for the next wait.
        assert worker.waits.wait(keys, 0.1) is False
        assert int(r.info("clients")["blocked_clients"]) == 3
        woke: list[bool] = []
        waiter = threading.Thread(target=lambda: woke.append(worker.waits.wait(keys, 10)))
        waiter.start()
        time.sleep(0.05)
        queues[2].enqueue(pj.add, 1, 2)
        waiter.join(10)
        assert woke == [True]
        # The job is still queued (the wait takes nothing); the other two waits stay blocked.
        assert r.llen(queues[2].key) == 1
        assert int(r.info("clients")["blocked_clients"]) == 2
    finally:
        worker.waits.close()
    deadline = time.monotonic() + 5
    while int(r.info("clients")["blocked_clients"]) != 0:
        assert time.monotonic() < deadline, "close() left a wait blocked"
        time.sleep(0.01)


QUEUE_SETS = pytest.mark.parametrize(
    "names", [["one"], ["high", "default", "low"]], ids=["one-queue", "three-queues"]
)


def _stops_at_once_from_its_wait(r: redis.Redis, names: list[str]) -> None:
    """An idle worker on ``names`` (a 30 s wait for work) runs until stopped, which must be at once."""
    queues = [Queue(name, connection=r, serializer=JSONSerializer) for name in names]
    worker = FastWorker(queues, connection=r, serializer=JSONSerializer, master_timeout=60)
    assert worker.dequeue_timeout == 30
    started = time.monotonic()
    _batch_run(r, [], worker, burst=False)
    assert time.monotonic() - started < 10
    assert r.zcard(KEYS.heartbeats) == 0
    deadline = time.monotonic() + 5
    while int(r.info("clients")["blocked_clients"]) != 0:
        assert time.monotonic() < deadline, "the stopped wait was left blocked in the server"
        time.sleep(0.01)


@QUEUE_SETS
def test_a_stop_that_comes_while_the_claim_finds_nothing_does_not_wait_for_work(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    real = ClaimProtocol.finish_and_claim

    def signalled_during_the_claim(self: Any, pending: Any, wanted: int) -> Any:
        claimed = real(self, pending, wanted)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker is busy here: RQ's handler only flags it
        return claimed

    monkeypatch.setattr(ClaimProtocol, "finish_and_claim", signalled_during_the_claim)
    # Idle right after, it stops at once instead of blocking for its 30 s wait.
    _stops_at_once_from_its_wait(r, names)


@QUEUE_SETS
def test_a_stop_whose_raise_is_lost_after_the_last_check_ends_the_wait_at_once(
    r: redis.Redis, worker_env: Any, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    real = FastWorker._block_for_work

    def signalled_after_the_check(self: Any, timeout: float, wanted: int) -> Any:
        # Idle, past the loop's last look at the request: RQ's handler raises, and a handler
        # that runs in a finalizer has that raise dropped. The request stays recorded.
        try:
            self.request_stop(signal.SIGTERM, None)
        except StopRequested:
            pass
        assert self.stop_requested
        return real(self, timeout, wanted)

    monkeypatch.setattr(FastWorker, "_block_for_work", signalled_after_the_check)
    # The wait ends at once: the stop alarm rang.
    _stops_at_once_from_its_wait(r, names)


def test_a_wait_on_a_master_that_stops_answering_times_out_with_the_socket(
    tmp_path: Path, worker_env: Any
) -> None:
    # A master that stops answering without closing the connection (stopped, partitioned): the
    # wait ends after the socket's timeout, as the blocking read did, not after the wait's own.
    with _worker_on_a_server_of_its_own(tmp_path / "silent") as (server, _client, queue, worker):
        held = worker.protocol.held
        assert held.lease is not None
        held.lease.connection.socket_timeout = 0.5
        held.lease.connection.disconnect()
        assert worker.protocol.finish_and_claim([], 1) == []  # connected again, with that timeout
        assert held.socket().gettimeout() == 0.5
        server.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                worker.protocol.wait_and_claim(queue.key, 20, 1)
            assert time.monotonic() - started < 10
            assert worker.protocol.unsure is True  # the claim may have run: recovery checks it
        finally:
            server.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def _worker_on_a_server_of_its_own(
    directory: Path,
) -> Iterator[tuple[RedisProc, redis.Redis, Queue, FastWorker]]:
    """A private redis-server, a client, a queue and a FastWorker on it that has claimed once."""
    server = start_redis(directory)
    client = server.client()
    try:
        queue = Queue(QUEUE, connection=client, serializer=JSONSerializer)
        worker = FastWorker([queue], connection=client, serializer=JSONSerializer)
        assert worker.protocol.finish_and_claim([], 1) == []
        yield server, client, queue, worker
    finally:
        client.close()
        server.kill()


def test_a_master_demoted_while_the_worker_waits_is_a_lost_master(
    tmp_path: Path, worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # REPLICAOF ends the waits of clients blocked in a write (BLMOVE): Redis 7 answers UNBLOCKED
    # and closes the connection. The worker's fault policy must see a lost master in that.
    with _worker_on_a_server_of_its_own(tmp_path / "demoted") as (_server, client, queue, worker):
        raised: list[BaseException] = []

        def wait() -> None:
            try:
                worker.protocol.wait_and_claim(queue.key, 10, 1)
            except BaseException as exc:  # noqa: BLE001 - the test looks at what it is
                raised.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        deadline = time.monotonic() + 10
        while int(client.info("clients")["blocked_clients"]) == 0:
            assert time.monotonic() < deadline, "the wait never blocked"
            time.sleep(0.01)
        client.replicaof("127.0.0.1", free_port())  # a master that is not there
        waiter.join(10)
        assert not waiter.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], UNAVAILABLE_ERRORS), raised
