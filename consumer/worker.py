"""``FastWorker``: an RQ worker with RQ's data model and a fraction of its per-job cost.

``rq worker -c consumer.settings -S json -w consumer.worker.FastWorker member``

What it keeps: queues, job hashes, executions, the started/finished/failed/scheduled
registries, result streams, retries, callbacks, timeouts, worker hashes and commands, so
``rq info``, the dashboard and RQ's maintenance see what they see with a stock worker.

What it changes (README, "Performance"):

- one round trip claims a job (pop, read the hash, mark it started, register the execution:
  a Lua script) and one finishes it (result, registries, worker stats: another script); the
  finish of a job travels in the same pipeline as the claim of the next one;
- jobs run in the worker process (no fork per job, like ``SimpleWorker``); with
  ``WORKER_CONCURRENCY`` > 1 they run on that many threads, for I/O-bound jobs;
- liveness: a background thread beats every few seconds; any worker (and the monitor in
  :mod:`consumer.recovery`) re-queues the jobs of a worker whose beat stopped, within
  ``HEARTBEAT_TIMEOUT`` seconds, instead of RQ's job timeout plus maintenance interval;
- the suspension flag is read at most once a second, not once per job; the worker hash's
  ``state`` stays ``busy`` while jobs keep coming; per-job log lines are at DEBUG;
- a lost Redis master (failover) is waited for, bounded by ``WORKER_MASTER_TIMEOUT``
  (:class:`consumer.failover.FailoverMixin`, mixed in front of :class:`FastWorkerBase`).

Failures, retries, ``Retry`` results, jobs with dependents, ``result_ttl=0``, repeats and
rate-limited jobs take RQ's own code paths unchanged.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from base64 import b64encode
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from uuid import uuid4

import redis.exceptions
from rq.callbacks import execute_stopped_callback, execute_success_callback
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT, DEFAULT_WORKER_TTL
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD, Job, JobStatus, Retry
from rq.queue import Queue
from rq.results import Result
from rq.suspension import is_suspended
from rq.timeouts import JobTimeoutException, TimerDeathPenalty, UnixSignalDeathPenalty
from rq.utils import utcformat
from rq.worker import SimpleWorker
from rq.worker.base import DequeueStrategy, WorkerStatus

from shared.constants import HEARTBEAT_PREFIX

from . import recovery, scripts
from .context import get_settings
from .failover import FailoverMixin
from .restore import restore

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None

logger = logging.getLogger(__name__)

#: Sorted set of live fast workers, scored by the unix time of their last beat.
HEARTBEATS_KEY = HEARTBEAT_PREFIX + "workers"


class JobStopped(Exception):
    """Raised inside a running job that ``rq job stop`` (a ``stop-job`` command) asked to stop."""


@dataclass
class _Pending:
    """A finished job whose success writes ride with the next claim."""

    job: Job
    execution: Execution
    args: list[Any]


@dataclass
class _InFlight:
    """A finish-and-claim request sent and not yet answered (batch mode's look-ahead)."""

    connection: Any
    pending: list[_Pending]
    wanted: int
    stamp: str
    now: datetime
    count: int


#: ``Result.Type.SUCCESSFUL.value``, looked up once.
_SUCCESSFUL = Result.Type.SUCCESSFUL.value


def _pack(connection: Any, commands: list[tuple[Any, ...]]) -> list[bytes]:
    """``connection.pack_commands(commands)`` straight through hiredis when it is there.

    redis-py's packer copies every argument through a generator first; the worker's commands
    hold only str, bytes and int arguments, which hiredis packs as redis-py would.
    """
    if _hiredis_pack is None:
        packed: list[bytes] = connection.pack_commands(commands)
        return packed
    return [b"".join(_hiredis_pack(command) for command in commands)]


def _first_error(replies: list[Any]) -> redis.exceptions.ResponseError | None:
    """The first error reply among ``replies``, if any."""
    return next((reply for reply in replies if isinstance(reply, redis.exceptions.ResponseError)), None)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(moment: datetime) -> str:
    """RQ's ``utcformat`` (``%Y-%m-%dT%H:%M:%S.%fZ``) without ``strftime``'s cost."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class AlarmDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM job timeout, with its handler installed once instead of twice per job."""

    _current: AlarmDeathPenalty | None = None

    def setup_death_penalty(self) -> None:
        """Arm the alarm for this penalty's timeout."""
        # Reading the handler is cheap; other code (RQ's own penalty) may have replaced it.
        if signal.getsignal(signal.SIGALRM) is not _alarm_handler:
            signal.signal(signal.SIGALRM, _alarm_handler)
        AlarmDeathPenalty._current = self
        signal.alarm(self._timeout)

    def cancel_death_penalty(self) -> None:
        """Disarm the alarm."""
        signal.alarm(0)
        AlarmDeathPenalty._current = None


def _alarm_handler(signum: int, frame: FrameType | None) -> None:
    current = AlarmDeathPenalty._current
    if current is not None:
        current.handle_death_penalty(signum, frame)


def _func_cached(job_class: type[Job]) -> type[Job]:
    """``job_class`` whose ``func`` imports each dotted path once per worker, not on every access.

    RQ's ``Job.func`` calls ``import_attribute`` each time it is read (twice per job).
    """
    cache: dict[str, Any] = {}

    class FuncCachedJob(job_class):  # type: ignore[valid-type,misc]
        @property
        def func(self) -> Any:
            name = self.func_name
            if name is None or self.instance:
                return super().func
            func = cache.get(name)
            if func is None:
                func = cache[name] = super().func
            return func

    FuncCachedJob.__name__ = FuncCachedJob.__qualname__ = job_class.__name__
    return FuncCachedJob


class FastWorkerBase(SimpleWorker):
    """An RQ worker that claims and finishes each job in one round trip, without forking."""

    #: Seconds between suspension checks (stock RQ checks before every job).
    suspension_check_interval = 1.0

    def __init__(
        self, *args: Any, concurrency: int | None = None, batch: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.concurrency = max(1, concurrency if concurrency is not None else settings.worker_concurrency)
        #: Jobs claimed per round trip in main-thread mode (``WORKER_BATCH``); see the README.
        self.batch = max(1, batch if batch is not None else settings.worker_batch)
        if self.concurrency > 1:
            # SIGALRM reaches the main thread only; a timer thread times out jobs on the pool threads.
            self.death_penalty_class = TimerDeathPenalty
        elif self.death_penalty_class is UnixSignalDeathPenalty:
            self.death_penalty_class = AlarmDeathPenalty
        self.heartbeat_timeout = float(settings.heartbeat_timeout)
        self.beat_interval = min(3.0, self.heartbeat_timeout / 5)
        self._claim_sha = ""
        self._finish_sha = ""
        #: The class of the jobs this worker claims (``job_class`` with ``func`` cached).
        self._claimed_job_class = _func_cached(self.job_class)
        self._suspension_checked_at = 0.0
        self._beats_stop = threading.Event()
        self._beats_thread: threading.Thread | None = None
        self._busy_ttl = 0
        self._in_perform = False
        self._main_thread = threading.main_thread().ident
        self._slots = threading.Semaphore(self.concurrency)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.log = logger

    # -- life cycle ---------------------------------------------------------------------------

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """Run jobs until stopped (or, with ``burst``, until the queues are empty)."""
        self.bootstrap(logging_level, date_format, log_format)
        self._dequeue_strategy = dequeue_strategy
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._stop_running_job)
        self._beat()
        self._beats_thread = threading.Thread(target=self._beats, name=f"heartbeat-{self.name}", daemon=True)
        self._beats_thread.start()
        completed = 0
        try:
            if self.concurrency > 1:
                completed = self._run_threaded(burst, max_jobs, max_idle_time)
            else:
                completed = self._run(burst, max_jobs, max_idle_time)
        finally:
            self._beats_stop.set()
            if self._beats_thread is not None:
                self._beats_thread.join(timeout=5)
            self._unregister_beat()
            self.teardown()
        return bool(completed)

    def _unregister_beat(self) -> None:
        # Jobs still in flight (cold shutdown) stay registered so that recovery re-queues them.
        if not self.executions:
            try:
                self.connection.zrem(HEARTBEATS_KEY, self.name)
            except redis.exceptions.RedisError:
                logger.warning("worker %s: could not remove its heartbeat", self.name)

    def _loop_checks(self, burst: bool) -> bool:
        """Suspension and maintenance between jobs; returns whether to stop."""
        if time.monotonic() - self._suspension_checked_at >= self.suspension_check_interval:
            self.check_for_suspension(burst)
            self._suspension_checked_at = time.monotonic()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        return self._stop_requested

    def _run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        completed = 0
        pending: list[_Pending] = []
        ready: list[tuple[Job, Queue, Execution]] = []
        inflight: _InFlight | None = None
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    # Claimed jobs are started already: run them all, even when asked to stop.
                    if not ready and self._loop_checks(burst):
                        logger.info("Worker %s: stopping on request", self.name)
                        break
                    # Busy before the claim: a SIGTERM arriving now waits for the jobs.
                    self._state = WorkerStatus.BUSY
                    if not ready:
                        ready = self._finish_and_claim(pending, self._wanted(completed, max_jobs))
                        pending = []
                    if not ready:
                        if burst:
                            logger.info("Worker %s: done, quitting", self.name)
                            break
                        if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                            logger.info("Worker %s: idle for %d seconds, quitting", self.name, max_idle_time)
                            break
                        self._wait_for_work(max_idle_time, idle_since)
                        continue
                    running, ready = ready, []
                    # Batches: claim the next batch (with the last one's successes) while this
                    # one runs, so the round trip overlaps the work.
                    ahead = completed + len(running)
                    if self.batch > 1 and not self._stop_requested and (max_jobs is None or ahead < max_jobs):
                        inflight = self._start_claim(pending, self._wanted(ahead, max_jobs))
                        if inflight is not None:
                            pending = []
                    for job, queue, execution in running:
                        done = self._execute(job, queue, execution)
                        if done is not None:
                            pending.append(done)
                        completed += 1
                    if inflight is not None:
                        sent, inflight = inflight, None
                        ready = self._end_claim(sent)
                    idle_since = time.monotonic()
                    if max_jobs is not None and completed >= max_jobs:
                        logger.info("Worker %s: finished executing %d jobs, quitting", self.name, completed)
                        break
                except StopRequested:
                    break
                except redis.exceptions.TimeoutError:
                    logger.error("Worker %s: Redis connection timeout, quitting...", self.name)
                    break
                except redis.exceptions.ConnectionError as exc:
                    logger.error("Worker %s: Redis unreachable (%s); retrying in 1s", self.name, exc)
                    if inflight is not None:
                        # Its successes are written again with the next claim (they are idempotent).
                        pending, inflight = inflight.pending + pending, None
                    time.sleep(1)
        finally:
            if inflight is not None:
                # Left by an exception mid-batch: register what the claim took, so that recovery
                # re-queues it if this worker dies; its successes are written below.
                pending = inflight.pending + pending
                try:
                    raw = self._read_replies(inflight.connection, inflight.count)[-1]
                    ready += self._parse_claimed(raw, inflight.stamp, inflight.now)
                except Exception:
                    logger.exception("Worker %s: could not read its last claim", self.name)
            if ready:
                logger.warning(
                    "Worker %s: %d claimed job(s) not run; recovery re-queues them", self.name, len(ready)
                )
            for done in pending:
                self._flush(done)
        return completed

    def _wanted(self, completed: int, max_jobs: int | None) -> int:
        """Jobs to claim next: a batch, or fewer when ``max_jobs`` is near."""
        return self.batch if max_jobs is None else max(1, min(self.batch, max_jobs - completed))

    def _run_threaded(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        completed = 0
        idle_since = time.monotonic()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"job-{self.name}")
        try:
            while True:
                try:
                    if self._loop_checks(burst):
                        break
                    self._slots.acquire()
                    # Read before claiming: a job still running may re-queue itself (a retry).
                    in_flight = self._in_flight
                    self._state = WorkerStatus.BUSY
                    try:
                        claimed = self._finish_and_claim([], 1)
                    except BaseException:
                        self._slots.release()
                        raise
                    if not claimed:
                        self._slots.release()
                        if burst:
                            if not in_flight:
                                break
                            time.sleep(0.005)
                            continue
                        if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                            break
                        self._wait_for_work(max_idle_time, idle_since)
                        continue
                    with self._in_flight_lock:
                        self._in_flight += 1
                    pool.submit(self._execute_in_thread, *claimed[0])
                    completed += 1
                    idle_since = time.monotonic()
                    if max_jobs is not None and completed >= max_jobs:
                        break
                except StopRequested:
                    break
                except redis.exceptions.ConnectionError as exc:
                    logger.error("Worker %s: Redis unreachable (%s); retrying in 1s", self.name, exc)
                    time.sleep(1)
        finally:
            pool.shutdown(wait=True)
        return completed

    def _execute_in_thread(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            pending = self._execute(job, queue, execution)
            if pending is not None:
                self._flush(pending)
        except Exception:
            logger.exception("Worker %s: job %s crashed its thread", self.name, job.id)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            self._slots.release()

    # -- claiming -------------------------------------------------------------------------------

    def _claim_args(self, wanted: int) -> tuple[list[Any], str, datetime]:
        """The claim script's KEYS and ARGV for up to ``wanted`` jobs, its stamp and its time."""
        now = _now()
        stamp = _fmt(now)
        queues = self._ordered_queues
        claim = [len(queues), *(q.key for q in queues)]
        claim += [self.name, self.key, stamp, repr(now.timestamp()), uuid4().hex, DEFAULT_WORKER_TTL, wanted]
        return claim, stamp, now

    def _finish_and_claim(self, pending: list[_Pending], wanted: int) -> list[tuple[Job, Queue, Execution]]:
        """Write ``pending``'s successes and claim up to ``wanted`` jobs, in one round trip."""
        if self._stop_requested:
            for done in pending:
                self._flush(done)
            return []
        claim, stamp, now = self._claim_args(wanted)
        if not self._claim_sha:
            self._load_scripts()
        while True:
            try:
                if not pending:
                    raw = self.connection.evalsha(self._claim_sha, *claim)
                else:
                    finish = ("EVALSHA", self._finish_sha, 0, *self._finish_many_args(pending))
                    finished, raw = self._round_trip([finish, ("EVALSHA", self._claim_sha, *claim)])
                    if not self._finished(pending, finished, raw):
                        pending = []
                        continue
                break
            except redis.exceptions.NoScriptError:
                # Redis restarted or flushed its scripts; none of them ran.
                self._load_scripts()
        return self._parse_claimed(raw, stamp, now)

    def _finished(self, pending: list[_Pending], finished: list[Any], raw: Any) -> bool:
        """Book the success writes; ``False`` when the claim must be made again."""
        for done, ok in zip(pending, finished, strict=True):
            self._after_finish(done, bool(ok))
        # RQ's path just enqueued dependents the claim could not see yet.
        return bool(raw) or all(finished)

    def _start_claim(self, pending: list[_Pending], wanted: int) -> _InFlight:
        """Send ``pending``'s successes and a claim of up to ``wanted`` jobs; :meth:`_end_claim` reads."""
        if not self._claim_sha:
            self._load_scripts()
        claim, stamp, now = self._claim_args(wanted)
        commands: list[tuple[Any, ...]] = []
        if pending:
            commands.append(("EVALSHA", self._finish_sha, 0, *self._finish_many_args(pending)))
        commands.append(("EVALSHA", self._claim_sha, *claim))
        connection = self._send(commands)
        return _InFlight(connection, pending, wanted, stamp, now, len(commands))

    def _end_claim(self, inflight: _InFlight) -> list[tuple[Job, Queue, Execution]]:
        """Read the answer to :meth:`_start_claim`: the jobs claimed (registered as executions)."""
        replies = self._read_replies(inflight.connection, inflight.count)
        error = _first_error(replies)
        if isinstance(error, redis.exceptions.NoScriptError):
            self._load_scripts()
            return self._finish_and_claim(inflight.pending, inflight.wanted)
        if error is not None:
            raise error
        raw = replies[-1]
        if inflight.pending and not self._finished(inflight.pending, replies[0], raw):
            return self._finish_and_claim([], inflight.wanted)
        return self._parse_claimed(raw, inflight.stamp, inflight.now)

    def _parse_claimed(self, raw: Any, stamp: str, now: datetime) -> list[tuple[Job, Queue, Execution]]:
        """Jobs, queues and executions of a claim script's reply."""
        by_key = {q.key: q for q in self._ordered_queues}
        started = datetime.fromisoformat(stamp[:-1]).replace(tzinfo=UTC)
        claimed = []
        for item in raw or []:
            queue_key, job_id, exec_id = (part.decode() for part in item[:3])
            self._busy_ttl = max(self._busy_ttl, int(item[3]))
            # The worker's serializer is resolved already; resolving it again per job costs a
            # Protocol isinstance check.
            job = self._claimed_job_class(job_id, connection=self.connection)
            job.serializer = self.serializer
            fields = item[4]
            restore(job, dict(zip(fields[::2], fields[1::2], strict=True)))
            job.worker_name = self.name
            job.last_heartbeat = job.started_at = started
            job._status = JobStatus.STARTED
            queue = by_key[queue_key]
            execution = Execution(exec_id, job_id, self.connection, worker_name=self.name)
            execution.created_at = execution.last_heartbeat = now
            execution._job = job
            self.executions[exec_id] = execution
            self.reorder_queues(reference_queue=queue)
            logger.debug("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
            claimed.append((job, queue, execution))
        return claimed

    def _wait_for_work(self, max_idle_time: int | None, idle_since: float) -> None:
        """Block until a queue holds a job, without taking it (so nothing is lost if we die)."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        timeout = float(self.dequeue_timeout)
        if max_idle_time is not None:
            timeout = max(0.1, min(timeout, max_idle_time - (time.monotonic() - idle_since)))
        keys = [q.key for q in self._ordered_queues]
        if len(keys) == 1:
            # BLMOVE RIGHT->RIGHT of a list onto itself is a no-op move that blocks until non-empty.
            self.connection.blmove(keys[0], keys[0], timeout, "RIGHT", "RIGHT")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop_requested:
            # LMPOP would take the job; instead ask for lengths, then block briefly on each queue.
            with self.connection.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                if any(pipe.execute()):
                    return
            for key in keys:
                if self.connection.blmove(key, key, 0.2 / len(keys) + 0.05, "RIGHT", "RIGHT") is not None:
                    return

    # -- running --------------------------------------------------------------------------------

    def _stop_running_job(self, signum: int, frame: FrameType | None) -> None:
        if self._in_perform and self._stopped_job_id is not None:
            self._in_perform = False
            raise JobStopped(f"job {self._stopped_job_id} stopped on request")

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the running job (there is no horse): raise :class:`JobStopped` inside it."""
        if self._in_perform and self.concurrency == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    def _execute(self, job: Job, queue: Queue, execution: Execution) -> _Pending | None:
        """Run ``job``; return its success writes to send with the next claim, or ``None``."""
        death_penalty = self.death_penalty_class
        try:
            job.started_at = _now()
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            with death_penalty(timeout, JobTimeoutException, job_id=job.id):
                self._in_perform = True
                try:
                    return_value = job.perform()
                finally:
                    self._in_perform = False
            job.ended_at = _now()
            job.last_heartbeat = job.ended_at
            job._result = return_value
            if isinstance(return_value, Retry):
                self.handle_job_retry(job, queue, return_value, queue.started_job_registry, execution)
                return None
            job._status = JobStatus.FINISHED
            execute_success_callback(job, death_penalty, return_value)
        except JobStopped:
            self._finish_stopped(job, queue, execution)
            return None
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, JobTimeoutException):
                raise
            if self._stopped_job_id == job.id:
                self._finish_stopped(job, queue, execution)
            else:
                self._finalize_failure(job, queue, execution, sys.exc_info())
            return None
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl == 0 or job.repeats_left or job.has_rate_limit:
            self.handle_job_success(job, queue, queue.started_job_registry, execution)
            job.send_webhooks(JobStatus.FINISHED)
            return None
        return _Pending(job, execution, self._finish_args(job, execution, result_ttl))

    def _finish_stopped(self, job: Job, queue: Queue, execution: Execution) -> None:
        logger.warning("Worker %s: job %s stopped on request", self.name, job.id)
        job.ended_at = _now()
        try:
            execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            logger.exception("Worker %s: stopped callback for job %s raised", self.name, job.id)
        self.handle_job_failure(job, queue=queue, exc_string="Job stopped by user.", execution=execution)

    def _finish_args(self, job: Job, execution: Execution, result_ttl: int) -> list[Any]:
        started, ended = job.started_at, job.ended_at
        assert started is not None and ended is not None
        ended_at = repr(ended.timestamp())
        args: list[Any] = [
            job.id,
            execution.id,
            self.name,
            "1" if job._dependency_ids else "0",  # whether a dependencies set may exist
            job.origin,
            _fmt(started),
            _fmt(ended),
            ended_at,
            result_ttl,
            repr((ended - started).total_seconds()),
            # The fields of rq.results.Result.serialize() for a successful result.
            "type",
            _SUCCESSFUL,
            "worker_name",
            self.name,
        ]
        if job._result is not None:
            try:
                serialized = job.serializer.dumps(job._result)
            except Exception:
                serialized = job.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
            args += ["return_value", b64encode(serialized).decode()]
        args += ["execution_id", execution.id, "execution_started_at", repr(execution.created_at.timestamp())]
        args += ["execution_ended_at", ended_at]
        return args

    def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once on one pooled connection and read every reply.

        What ``pipeline(transaction=False).execute()`` does, without its bookkeeping (a
        noticeable share of a trivial job's cost). The first error reply is raised after all
        replies are read; a connection error drops the connection.
        """
        replies = self._read_replies(self._send(commands), len(commands))
        error = _first_error(replies)
        if error is not None:
            raise error
        return replies

    def _send(self, commands: list[tuple[Any, ...]]) -> Any:
        """Send ``commands`` at once on a pooled connection; the caller reads the replies from it.

        A failed send drops the connection and gives it back before the error is raised.
        """
        pool = self.connection.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(_pack(connection, commands))
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        return connection

    def _read_replies(self, connection: Any, count: int) -> list[Any]:
        """Read ``count`` replies (error replies as exceptions in the list); give the connection back.

        A connection error drops the connection and is raised.
        """
        pool = self.connection.connection_pool
        try:
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _load_scripts(self) -> None:
        self._claim_sha = self.connection.script_load(scripts.CLAIM)
        self._finish_sha = self.connection.script_load(scripts.FINISH_MANY)

    def _finish_many_args(self, pending: list[_Pending]) -> list[Any]:
        """``FINISH_MANY``'s arguments: the worker key, then each job's count and arguments."""
        args: list[Any] = [self.key]
        for done in pending:
            args.append(len(done.args))
            args += done.args
        return args

    def _flush(self, pending: _Pending) -> None:
        """Write ``pending``'s success on its own."""
        if not self._finish_sha:
            self._load_scripts()
        args = self._finish_many_args([pending])
        try:
            [finished] = self.connection.evalsha(self._finish_sha, 0, *args)
        except redis.exceptions.NoScriptError:
            self._load_scripts()
            [finished] = self.connection.evalsha(self._finish_sha, 0, *args)
        self._after_finish(pending, bool(finished))

    def _after_finish(self, pending: _Pending, finished: bool) -> None:
        job = pending.job
        if not finished:
            # Dependents appeared: RQ's own path moves them to ready atomically.
            queue = self.queue_class(
                job.origin, connection=self.connection, job_class=self.job_class, serializer=self.serializer
            )
            self.handle_job_success(job, queue, queue.started_job_registry, pending.execution)
        else:
            self.executions.pop(pending.execution.id, None)
            self.successful_job_count += 1
        if job.webhooks:
            job.send_webhooks(JobStatus.FINISHED)
        logger.debug("Worker %s: %s: Job OK (%s)", self.name, job.origin, job.id)

    # -- liveness ---------------------------------------------------------------------------------

    def check_for_suspension(self, burst: bool) -> None:
        """Like RQ's, without a worker heartbeat (the heartbeat thread keeps the worker alive)."""
        before_state = None
        notified = False
        while not self._stop_requested and is_suspended(self.connection):
            if burst:
                logger.info("Worker %s: suspended in burst mode, exiting", self.name)
                raise StopRequested
            if not notified:
                logger.info("Worker %s: suspended, run `rq resume` to resume", self.name)
                before_state = self.get_state()
                self.set_state(WorkerStatus.SUSPENDED)
                notified = True
            time.sleep(1)
        if before_state:
            self.set_state(before_state)

    def _beat(self) -> None:
        ttl = max(self.worker_ttl + 60, self._busy_ttl if self.executions else 0)
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zadd(HEARTBEATS_KEY, {self.name: time.time()})
            pipe.hset(self.key, "last_heartbeat", utcformat(_now()))
            pipe.expire(self.key, ttl)
            pipe.expire(self.executions_key, ttl)
            pipe.execute()

    def _beats(self) -> None:
        """Heartbeat thread: beat, and recover the jobs of workers whose beat stopped."""
        next_beat = time.monotonic() + self.beat_interval
        while not self._beats_stop.wait(min(1.0, self.beat_interval)):
            try:
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self.beat_interval
                recovery.recover_dead_workers(
                    self.connection, recovery.stale_after(self.heartbeat_timeout), serializer=self.serializer
                )
            except redis.exceptions.RedisError as exc:
                logger.warning("Worker %s: heartbeat failed: %s", self.name, exc)


class FastWorker(FailoverMixin, FastWorkerBase):
    """:class:`FastWorkerBase` that rides out a Redis failover (the default worker class)."""
