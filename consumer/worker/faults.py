"""The worker's fault policy: what it does when Redis goes away, turns read-only or fills up.

RQ's own worker classes handle a lost master badly: a connection error outside the blocking pop
ends the work loop, and inside it they retry forever with a backoff that grows to a minute.
:class:`FaultPolicy` turns every such error into one wait: poll for a master (through
Sentinel, the client asks for the new address on each new connection) with a short backoff,
carry on where the worker was, and exit with :data:`EXIT_NO_MASTER` when no master answers
for ``WORKER_MASTER_TIMEOUT`` seconds. A full Redis (``OOM`` replies under ``noeviction``:
nothing written) is waited out the same way. A stop request ends any wait at once.

A job whose bookkeeping the fault cut off is put back at the front of its queue once a
master answers (:func:`shared.rqmodel.requeue.requeue`, no attempt spent), unless the master
shows it finished or queued; jobs are idempotent, so a second run writes nothing twice.
Only the main thread waits (and may exit): a job thread hands its cut-off job to the main
thread (:meth:`FaultPolicy.cut_off`), which puts it back before its next claim.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import OutOfMemoryError
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Job
from rq.queue import Queue

from shared.backoff import Backoff, Waits
from shared.connections import UNAVAILABLE_ERRORS
from shared.rqmodel.keys import parse_member
from shared.rqmodel.requeue import Requeued, requeue

if TYPE_CHECKING:
    from .worker import FastWorker

T = TypeVar("T")

#: Exit status of a worker that found no master for longer than its limit (``EX_UNAVAILABLE``).
EXIT_NO_MASTER = 69

#: Every error the policy waits out: a lost or demoted master, and a full one.
REDIS_FAULTS: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, OutOfMemoryError)

#: Waits between looks for a master, or for memory.
WAITS = Backoff(first=0.1, cap=1.0)


class FaultPolicy:
    """Waits out Redis faults for one worker, bounded by ``master_timeout`` seconds."""

    def __init__(self, worker: FastWorker, master_timeout: float) -> None:
        self.worker = worker
        self.master_timeout = float(master_timeout)
        #: Masters lost and found again.
        self.failovers = 0
        self._cut_off: list[Job] = []
        self._cut_off_lock = threading.Lock()
        self.log = worker.log

    def call(self, method: Callable[..., T], *args: object) -> T:
        """Call ``method`` until it gets through, waiting for a master or for memory between tries.

        Off the main thread the error goes through: only the main thread waits.
        """
        if threading.current_thread() is not threading.main_thread():
            return method(*args)
        full: Waits | None = None
        while True:
            try:
                result = method(*args)
            except UNAVAILABLE_ERRORS as exc:
                self.wait_for_master(exc)
                continue
            except OutOfMemoryError as exc:
                full = full or WAITS.start(self.master_timeout)
                self.wait_for_memory(exc, full)
                continue
            if full is not None:
                self.log.warning(
                    "Worker %s: Redis takes writes again after %.1fs", self.worker.name, full.waited
                )
            return result

    def wait_for_master(self, error: BaseException) -> None:
        """Block until a master answers; ``SystemExit(EXIT_NO_MASTER)`` after ``master_timeout``."""
        name = self.worker.name
        self.log.warning(
            "Worker %s: lost the Redis master (%s: %s); reconnecting", name, type(error).__name__, error
        )
        waits = WAITS.start(self.master_timeout)
        while True:
            if self.worker.stop_requested:
                raise StopRequested()
            try:
                role = self.worker.connection.execute_command("ROLE")
                if role and role[0] in (b"master", "master"):
                    break
                reason = "the server is a replica"
            except UNAVAILABLE_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if waits.expired:
                self._give_up(f"no Redis master for {waits.waited:.1f}s", reason)
            self._pause(waits)
        self.failovers += 1
        self.log.warning("Worker %s: Redis master back after %.1fs", name, waits.waited)
        try:
            self.recover_phantom_claims()
        except UNAVAILABLE_ERRORS as exc:
            self.log.warning("Worker %s: could not check its claims yet: %s", name, exc)

    def wait_for_memory(self, error: BaseException, waits: Waits) -> None:
        """One backoff step while Redis refuses writes (``maxmemory``); exit after ``master_timeout``."""
        if self.worker.stop_requested:
            raise StopRequested()
        if waits.expired:
            self._give_up(f"Redis refused writes for {waits.waited:.1f}s", str(error))
        if waits.tries == 0:
            self.log.warning("Worker %s: Redis is full (%s); waiting for memory", self.worker.name, error)
        self._pause(waits)

    def _pause(self, waits: Waits) -> None:
        """Sleep one backoff step in slices, so that a stop request ends the wait at once."""
        until = time.monotonic() + waits.next_delay()
        while not self.worker.stop_requested and time.monotonic() < until:
            time.sleep(min(0.05, max(0.0, until - time.monotonic())))
        if self.worker.stop_requested:
            raise StopRequested()

    def _give_up(self, what: str, reason: str) -> None:
        self.log.error(
            "Worker %s: %s (limit %ss, last: %s); exiting with %d",
            self.worker.name,
            what,
            self.master_timeout,
            reason,
            EXIT_NO_MASTER,
        )
        raise SystemExit(EXIT_NO_MASTER)

    def recover_phantom_claims(self) -> list[str]:
        """Put back the jobs the master says this worker runs but it never received.

        A claim (pop + start) that the old master executed and replicated but whose reply never
        arrived leaves a job "started" by a live worker that knows nothing of it: no worker
        would ever run it, and no dead-worker recovery applies.
        """
        worker = self.worker
        connection = worker.connection
        running = {execution.id for execution in worker.executions.values()}
        recovered = []
        for member in connection.smembers(worker.executions_key):
            job_id, execution_id = parse_member(member)
            if execution_id in running:
                continue
            with connection.pipeline() as pipe:
                pipe.srem(worker.executions_key, member)
                pipe.delete(worker.keys.execution(job_id, execution_id))
                pipe.execute()
            try:
                job = worker.job_class.fetch(job_id, connection=connection, serializer=worker.serializer)
            except NoSuchJobError:
                continue
            if self.put_back(job) is Requeued.QUEUED:
                recovered.append(job_id)
        return recovered

    def put_back(self, job: Job) -> Requeued:
        """Put a job whose bookkeeping was cut off back at the front of its queue (no attempt spent)."""
        worker = self.worker
        for execution_id, execution in list(worker.executions.items()):
            if execution.job_id == job.id:
                worker.executions.pop(execution_id, None)
        queue = worker.queue_for(job.origin)
        outcome = requeue(worker.connection, job, queue, attempt=False, keys=worker.keys)
        if outcome is Requeued.QUEUED:
            self.log.warning(
                "Worker %s: job %s put back on %s after the fault", worker.name, job.id, queue.name
            )
        return outcome

    def job_cut_off(self, job: Job, queue: Queue, error: BaseException) -> None:
        """A fault cut off a job's own writes (its failure, retry or callbacks): put it back.

        On a job thread the main thread does it later (:meth:`recover_cut_off`).
        """
        if threading.current_thread() is not threading.main_thread():
            self.cut_off(job, error)
            return
        if not isinstance(error, OutOfMemoryError):
            self.wait_for_master(error)
        self.call(self.put_back, job)

    def cut_off(self, job: Job, error: BaseException) -> None:
        """A job thread lost the master mid-job: the main thread recovers the job later."""
        self.log.warning("Worker %s: job %s cut off by a Redis fault (%s)", self.worker.name, job.id, error)
        with self._cut_off_lock:
            self._cut_off.append(job)

    def recover_cut_off(self) -> None:
        """Put back the jobs job threads could not finish (main thread)."""
        while self._cut_off:
            with self._cut_off_lock:
                job = self._cut_off.pop()
            self.call(self.put_back, job)
