"""Running a claimed job in the worker process: timeouts, stops, success or RQ's failure path."""

from __future__ import annotations

import _signal
import ctypes
import functools
import heapq
import itertools
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from rq.callbacks import execute_stopped_callback, execute_success_callback
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.timeouts import BaseDeathPenalty, JobTimeoutException, UnixSignalDeathPenalty

from shared.connections import deferred
from shared.rqmodel import claims
from shared.rqmodel.dates import utc_now
from shared.rqmodel.internals import death_penalty_exception, death_penalty_timeout, set_result, set_status

from .protocol import Pending

if TYPE_CHECKING:
    from .worker import FastWorker


class JobStopped(Exception):
    """Raised inside a running job that ``rq job stop`` (a ``stop-job`` command) asked to stop."""


class WorkHorseKilled(Exception):
    """Raised inside a running job on a ``kill-horse`` command: it fails as a killed horse's job does."""


class AlarmDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM job timeout, with its handler installed once instead of twice per job."""

    _current: AlarmDeathPenalty | None = None

    def setup_death_penalty(self) -> None:
        """Arm the alarm for this penalty's timeout."""
        # Other code (RQ's own penalty) may have replaced the handler. Read through _signal:
        # signal.getsignal turns the handler into an enum first, by way of a ValueError
        # (4% of the loop on trivial jobs, under py-spy).
        if _signal.getsignal(signal.SIGALRM) is not _alarm_handler:
            signal.signal(signal.SIGALRM, _alarm_handler)
        AlarmDeathPenalty._current = self
        signal.alarm(death_penalty_timeout(self))

    def cancel_death_penalty(self) -> None:
        """Disarm the alarm."""
        signal.alarm(0)
        AlarmDeathPenalty._current = None


def _alarm_handler(signum: int, frame: FrameType | None) -> None:
    current = AlarmDeathPenalty._current
    if current is not None:
        current.handle_death_penalty(signum, frame)


class _Watch:
    """One armed timeout: the thread to interrupt and the exception to raise there."""

    __slots__ = ("active", "exception", "thread_id")

    def __init__(self, thread_id: int, exception: type[BaseException]) -> None:
        self.thread_id = thread_id
        self.exception = exception
        self.active = True


class Watchdog:
    """One thread that raises the job timeouts of every job thread of the process.

    RQ's ``TimerDeathPenalty`` starts a thread per job (and one per callback) to do this, on the
    job's own path: 10 ms jobs on 10 threads ran at 920/s with it, 966/s with this (medians of 4
    interleaved runs).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, exception: type[BaseException]) -> _Watch:
        """Raise ``exception`` in the calling thread after ``seconds`` unless disarmed first."""
        watch = _Watch(threading.get_ident(), exception)
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._count), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-timeouts", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._changed.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        """Cancel ``watch``; it is dropped from the heap when it comes due."""
        with self._changed:
            watch.active = False

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._changed.wait()
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._changed.wait(due)
                    continue
                _, _, watch = heapq.heappop(self._heap)
                watch.active = False
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(watch.thread_id), ctypes.py_object(watch.exception)
                )


WATCHDOG = Watchdog()


@functools.cache
def _timeout_exception(exception: type[BaseException], seconds: int) -> type[BaseException]:
    """``exception`` carrying RQ's timeout message (an asynchronous exception is raised by class)."""
    message = f"Task exceeded maximum timeout value ({seconds} seconds)"

    def __init__(self: BaseException, *args: object) -> None:
        Exception.__init__(self, message)

    names = {"__module__": exception.__module__, "__qualname__": exception.__qualname__}
    return type(exception.__name__, (exception,), {"__init__": __init__, **names})


class WatchdogDeathPenalty(BaseDeathPenalty):
    """RQ's ``TimerDeathPenalty`` (a job timeout on a job thread) on the one :data:`WATCHDOG` thread."""

    _watch: _Watch | None = None

    def setup_death_penalty(self) -> None:
        """Arm the watchdog for this thread."""
        seconds = death_penalty_timeout(self)
        if seconds > 0:
            self._watch = WATCHDOG.arm(seconds, _timeout_exception(death_penalty_exception(self), seconds))

    def cancel_death_penalty(self) -> None:
        """Disarm it."""
        if self._watch is not None:
            WATCHDOG.disarm(self._watch)
            self._watch = None


class JobRunner:
    """Runs ``worker``'s claimed jobs in its own process: timeouts, ``rq job stop``, kill-horse."""

    def __init__(self, worker: FastWorker) -> None:
        self.worker = worker
        self.log = worker.log
        self._in_perform = False
        self._kill_requested = False

    @property
    def running(self) -> bool:
        """Whether a job's function runs now (main-thread mode)."""
        return self._in_perform

    def install(self) -> None:
        """Route SIGUSR1 (``rq job stop``, kill-horse) to the running job (main thread only)."""
        signal.signal(signal.SIGUSR1, self._stop_running_job)

    def _stop_running_job(self, signum: int, frame: FrameType | None) -> None:
        if not self._in_perform:
            return
        if self._kill_requested:
            self._kill_requested = False
            self._in_perform = False
            raise WorkHorseKilled("Work-horse terminated unexpectedly (kill-horse command)")
        if self.worker.stopped_job_id is not None:
            self._in_perform = False
            raise JobStopped(f"job {self.worker.stopped_job_id} stopped on request")

    def kill(self) -> bool:
        """Fail the running job as a killed horse's job fails; ``False`` when none runs here."""
        if not self._in_perform or self.worker.concurrency != 1:
            return False
        self._kill_requested = True
        os.kill(os.getpid(), signal.SIGUSR1)
        return True

    def stop(self) -> None:
        """Stop the running job (there is no horse): raise :class:`JobStopped` inside it."""
        if self._in_perform and self.worker.concurrency == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    def run(self, job: Job, queue: Queue, execution: Execution) -> Pending | None:
        """Run ``job``; return its success writes to send with the next claim, or ``None``.

        Failures, ``Retry`` results, stops and the jobs RQ's own success path must handle
        (``result_ttl=0``, repeats, rate limits) are written here through RQ's code.
        """
        worker = self.worker
        death_penalty = worker.death_penalty_class
        extra: list[tuple[object, ...]] = []
        try:
            job.started_at = utc_now()
            timeout = job.timeout or worker.queue_class.DEFAULT_TIMEOUT
            with death_penalty(timeout, JobTimeoutException, job_id=job.id):
                self._in_perform = True
                try:
                    return_value = job.perform()
                finally:
                    self._in_perform = False
            job.ended_at = utc_now()
            job.last_heartbeat = job.ended_at
            set_result(job, return_value)
            if isinstance(return_value, Retry):
                worker.handle_job_retry(job, queue, return_value, queue.started_job_registry, execution)
                return None
            set_status(job, JobStatus.FINISHED)
            result_ttl = job.get_result_ttl(worker.default_result_ttl)
            own_path = result_ttl == 0 or job.repeats_left or job.has_rate_limit
            if own_path:
                execute_success_callback(job, death_penalty, return_value)
            else:
                # The callback's small writes (the stats) ride with the success writes.
                with deferred.collecting(worker.connection) as extra:
                    execute_success_callback(job, death_penalty, return_value)
        except JobStopped:
            self._finish_stopped(job, queue, execution)
            return None
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, JobTimeoutException):
                raise
            if worker.stopped_job_id == job.id:
                self._finish_stopped(job, queue, execution)
            else:
                worker.finalize_failure(job, queue, execution, sys.exc_info())
            return None
        if own_path:
            worker.handle_job_success(job, queue, queue.started_job_registry, execution)
            job.send_webhooks(JobStatus.FINISHED)
            return None
        return Pending(job, execution, claims.success(job, execution, worker.name, result_ttl), extra)

    def _finish_stopped(self, job: Job, queue: Queue, execution: Execution) -> None:
        worker = self.worker
        self.log.warning("Worker %s: job %s stopped on request", worker.name, job.id)
        job.ended_at = utc_now()
        try:
            execute_stopped_callback(job, worker.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", worker.name, job.id)
        worker.handle_job_failure(job, queue=queue, exc_string="Job stopped by user.", execution=execution)
