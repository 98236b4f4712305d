"""Running a claimed job in the worker process: timeouts, stops, success or RQ's failure path."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from rq.callbacks import execute_stopped_callback, execute_success_callback
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from shared.rqmodel import claims
from shared.rqmodel.dates import utc_now
from shared.rqmodel.internals import death_penalty_timeout, set_result, set_status

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
        result_ttl = job.get_result_ttl(worker.default_result_ttl)
        if result_ttl == 0 or job.repeats_left or job.has_rate_limit:
            worker.handle_job_success(job, queue, queue.started_job_registry, execution)
            job.send_webhooks(JobStatus.FINISHED)
            return None
        return Pending(job, execution, claims.success(job, execution, worker.name, result_ttl))

    def _finish_stopped(self, job: Job, queue: Queue, execution: Execution) -> None:
        worker = self.worker
        self.log.warning("Worker %s: job %s stopped on request", worker.name, job.id)
        job.ended_at = utc_now()
        try:
            execute_stopped_callback(job, worker.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", worker.name, job.id)
        worker.handle_job_failure(job, queue=queue, exc_string="Job stopped by user.", execution=execution)
