"""Every private RQ attribute the project touches, named once.

RQ has no public way to do these few things the fast paths need (set a restored job's status
without a write, attach a job to an execution, push a job back without re-saving it, read a
worker's loop flags). They are pinned to the RQ minor the project tests (``rq>=3.0,<3.1`` in
``pyproject.toml``); ``make test-rq`` runs RQ's own suite against them, so an upgrade that
renames one fails there, in this one module.
"""

from __future__ import annotations

from typing import Any

from redis.client import Pipeline
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker.base import DequeueStrategy


def set_status(job: Job, status: JobStatus) -> None:
    """Set the status RQ keeps in memory, without writing it (the script wrote it)."""
    job._status = status


def set_result(job: Job, value: Any) -> None:
    """The return value RQ keeps in memory for callbacks and results."""
    job._result = value


def push_back(queue: Queue, job: Job, pipeline: Pipeline, at_front: bool = False) -> None:
    """Put an existing job back in ``queue`` (status queued, list push) without re-saving it all."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=at_front)


class WorkerInternals:
    """Named access to the state RQ's ``BaseWorker`` keeps in private attributes.

    Mixed into the project's worker classes (before RQ's class), so that the loop reads
    ``self.stop_requested`` rather than RQ's ``_stop_requested``.
    """

    _stop_requested: bool
    #: A warm stop was signalled while idle (RQ then raises ``StopRequested`` and records nothing).
    _stop_signalled = False
    _stopped_job_id: str | None
    _ordered_queues: list[Queue]
    _dequeue_strategy: DequeueStrategy | None
    _state: str

    @property
    def stop_requested(self) -> bool:
        """Whether a stop (SIGTERM, SIGINT, ``rq`` shutdown command) was requested."""
        return bool(self._stop_requested or self._stop_signalled)

    @property
    def stopped_job_id(self) -> str | None:
        """The job ``rq job stop`` asked this worker to stop, if any."""
        return self._stopped_job_id

    @property
    def ordered_queues(self) -> list[Queue]:
        """The queues in the order the dequeue strategy gives now."""
        return self._ordered_queues

    def set_dequeue_strategy(self, strategy: DequeueStrategy) -> None:
        """The strategy :meth:`reorder_queues` follows."""
        self._dequeue_strategy = strategy

    @property
    def dequeue_strategy(self) -> DequeueStrategy | None:
        """The dequeue strategy ``work()`` was given."""
        return self._dequeue_strategy

    def set_local_state(self, state: str) -> None:
        """Change the state RQ keeps in memory without writing the worker hash."""
        self._state = state

    def install_signal_handlers(self) -> None:
        """RQ's SIGINT/SIGTERM handlers (warm, then cold shutdown)."""
        self._install_signal_handlers()  # type: ignore[attr-defined]

    def _shutdown(self) -> None:
        """RQ's warm-stop step of its signal handler, with the request recorded first.

        RQ records a stop only when the worker is busy; otherwise it raises ``StopRequested``
        from the handler and relies on that. A signal that lands while a finalizer runs (a
        dropped connection pool's ``__del__``, under garbage collection) has the exception
        printed and dropped by Python, and the worker then waited for work as if never asked.
        Recorded, the stop is honoured where the loop checks :attr:`stop_requested`: before
        every wait for work, between jobs, and while waiting for a master. RQ's own flag keeps
        its meaning (a stop deferred until the running job ends), which RQ's tests check.
        """
        self._stop_signalled = True
        super()._shutdown()  # type: ignore[misc]

    def start_scheduler(self, burst: bool, logging_level: Any, date_format: str, log_format: str) -> None:
        """RQ's scheduler in this worker (``--with-scheduler``)."""
        self._start_scheduler(burst, logging_level, date_format, log_format)  # type: ignore[attr-defined]

    def finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None:
        """RQ's failure handling of a job that raised (retry or failed registry, callbacks)."""
        self._finalize_failure(job, queue, execution, exc_info)  # type: ignore[attr-defined]


def death_penalty_timeout(penalty: Any) -> int:
    """The timeout a death penalty was built with."""
    return int(penalty._timeout)


def death_penalty_exception(penalty: Any) -> type[BaseException]:
    """The exception a death penalty raises."""
    exception: type[BaseException] = penalty._exception
    return exception


def scheduler_process(worker: Any) -> Any:
    """The process of RQ's scheduler a worker started (``--with-scheduler``), if any."""
    scheduler = getattr(worker, "scheduler", None)
    return getattr(scheduler, "_process", None) if scheduler is not None else None
