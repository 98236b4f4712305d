"""Running a claimed job in the worker process: timeouts, stops, success or RQ's failure path."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from rq.callbacks import execute_stopped_callback, execute_success_callback
from rq.command import parse_payload
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from shared.rqmodel import claims
from shared.rqmodel.dates import utc_now
from shared.rqmodel.internals import death_penalty_timeout, set_result, set_status

from .protocol import Pending


class JobStopped(Exception):
    """Raised inside a running job that ``rq job stop`` (a ``stop-job`` command) asked to stop."""


class WorkHorseKilled(Exception):
    """Raised inside a running job on a ``kill-horse`` command: it fails as a killed horse's job does."""


class AlarmDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM job timeout, with its handler installed once instead of twice per job."""

    _current: AlarmDeathPenalty | None = None

    def setup_death_penalty(self) -> None:
        """Arm the alarm for this penalty's timeout."""
        # Reading the handler is cheap; other code (RQ's own penalty) may have replaced it.
        if signal.getsignal(signal.SIGALRM) is not _alarm_handler:
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


def func_cached(job_class: type[Job]) -> type[Job]:
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


class JobExecution:
    """Running jobs in-process for an RQ worker class (mixed in before RQ's worker)."""

    # Attributes of the worker this mixin is part of.
    log: logging.Logger
    name: str
    concurrency: int
    death_penalty_class: Any
    queue_class: Any
    default_result_ttl: int
    stopped_job_id: str | None
    _in_perform: bool
    _kill_requested: bool
    _in_flight: int
    _in_flight_lock: threading.Lock
    _slots: threading.Semaphore

    if TYPE_CHECKING:  # RQ's BaseWorker methods and the other mixins' this one calls

        def handle_job_retry(
            self, job: Job, queue: Queue, retry: Retry, registry: Any, execution: Any
        ) -> None: ...
        def handle_job_success(self, job: Job, queue: Queue, registry: Any, execution: Any) -> None: ...
        def handle_job_failure(self, job: Job, queue: Queue, **kwargs: Any) -> None: ...
        def finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None: ...
        def _flush(self, pending: Pending) -> None: ...

    def _stop_running_job(self, signum: int, frame: FrameType | None) -> None:
        if not self._in_perform:
            return
        if self._kill_requested:
            self._kill_requested = False
            self._in_perform = False
            raise WorkHorseKilled("Work-horse terminated unexpectedly (kill-horse command)")
        if self.stopped_job_id is not None:
            self._in_perform = False
            raise JobStopped(f"job {self.stopped_job_id} stopped on request")

    def handle_payload(self, message: Any) -> None:
        """Commands from ``rq`` (pubsub thread); ``kill-horse`` fails the running job, as RQ's does."""
        payload = parse_payload(message)
        if payload.get("command") != "kill-horse":
            super().handle_payload(message)  # type: ignore[misc]
            return
        self.log.info("Received kill horse command.")
        if self._in_perform and self.concurrency == 1:
            self.log.info("Killing horse...")
            self._kill_requested = True
            os.kill(os.getpid(), signal.SIGUSR1)
        elif self._in_perform:
            self.log.warning("Jobs run on threads (WORKER_CONCURRENCY > 1): kill horse command ignored")
        else:
            self.log.info("Worker is not working, kill horse command ignored")

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the running job (there is no horse): raise :class:`JobStopped` inside it."""
        if self._in_perform and self.concurrency == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    def _execute(self, job: Job, queue: Queue, execution: Execution) -> Pending | None:
        """Run ``job``; return its success writes to send with the next claim, or ``None``."""
        death_penalty = self.death_penalty_class
        try:
            job.started_at = utc_now()
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
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
                self.handle_job_retry(job, queue, return_value, queue.started_job_registry, execution)
                return None
            set_status(job, JobStatus.FINISHED)
            execute_success_callback(job, death_penalty, return_value)
        except JobStopped:
            self._finish_stopped(job, queue, execution)
            return None
        except BaseException as exc:
            if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, JobTimeoutException):
                raise
            if self.stopped_job_id == job.id:
                self._finish_stopped(job, queue, execution)
            else:
                self.finalize_failure(job, queue, execution, sys.exc_info())
            return None
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl == 0 or job.repeats_left or job.has_rate_limit:
            self.handle_job_success(job, queue, queue.started_job_registry, execution)
            job.send_webhooks(JobStatus.FINISHED)
            return None
        return Pending(job, execution, claims.success(job, execution, self.name, result_ttl))

    def _finish_stopped(self, job: Job, queue: Queue, execution: Execution) -> None:
        self.log.warning("Worker %s: job %s stopped on request", self.name, job.id)
        job.ended_at = utc_now()
        try:
            execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", self.name, job.id)
        self.handle_job_failure(job, queue=queue, exc_string="Job stopped by user.", execution=execution)

    def _execute_in_thread(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            pending = self._execute(job, queue, execution)
            if pending is not None:
                self._flush(pending)
        except Exception:
            self.log.exception("Worker %s: job %s crashed its thread", self.name, job.id)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            self._slots.release()
