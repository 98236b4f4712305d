"""``FastWorker``: the work loop, read top to bottom: wait, claim, run, finish, and each fault.

The loop holds its collaborators: :class:`~.protocol.ClaimProtocol` (claim and finish, one
round trip), :class:`~.execution.JobRunner` (a job in this process: timeouts, stops),
:class:`~.faults.FaultPolicy` (a lost master, a read-only replica, a full Redis, a lost claim
reply), :class:`~.heartbeats.Heartbeat` (liveness and dead-worker recovery),
:class:`~.commands.CommandListener` (``rq``'s commands), :class:`~.waits.QueueWaits` (a wait
on several queues at once) and, with ``WORKER_CONCURRENCY`` > 1, :class:`~.threads.JobThreads`.
Stop requests follow RQ: SIGINT or SIGTERM stops an idle worker at once and a busy one after
the job(s) it runs; a second signal stops it at once. The methods of RQ's worker that RQ's own
code calls (its CLI, signal handlers and commands) are in :mod:`.base`.
"""

from __future__ import annotations

import atexit
import gc
import threading
import time
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import UnixSignalDeathPenalty
from rq.worker.base import DequeueStrategy, WorkerStatus

from shared.connections import UNAVAILABLE_ERRORS, quick_retry, ride_out

from ..context import get_settings
from .base import RQWorkerBase
from .commands import CommandListener
from .execution import AlarmDeathPenalty, JobRunner, WatchdogDeathPenalty
from .faults import REDIS_FAULTS, FaultPolicy
from .heartbeats import Heartbeat
from .protocol import ClaimProtocol, InFlight, Pending, Started
from .threads import JobThreads
from .waits import QueueWaits, StopCut

#: Longest blocking wait for work while jobs run on threads (their successes are written meanwhile).
BUSY_WAIT_SECONDS = 1.0

# A worker process's exit is mostly the interpreter's last garbage collection over everything
# the job modules imported (SQLAlchemy, redis, rq): 0.05-0.25 s here, about 0.7 s beside two
# CPU hogs, most of a stop's time. Frozen at exit (after every other atexit handler's work is
# queued), the collection skips those objects: 0.015 s. Only the exiting process is affected.
atexit.register(gc.freeze)


class FastWorker(RQWorkerBase):
    """An RQ worker that claims and finishes each job in one round trip, without forking."""

    #: Seconds between suspension checks (RQ's own worker classes check before every job).
    suspension_check_interval = 1.0

    def __init__(
        self,
        *args: Any,
        concurrency: int | None = None,
        batch: int | None = None,
        master_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        settings = get_settings()
        # Set before RQ's __init__, which sizes the socket timeout from dequeue_timeout.
        if master_timeout is not None:
            self.master_timeout = master_timeout
        elif self.master_timeout is None:
            self.master_timeout = float(settings.worker_master_timeout)
        super().__init__(*args, **kwargs)
        # consumer.settings gives RQ a client that waits out outages inside redis-py (for RQ's
        # own worker classes); this worker sees each error itself (FaultPolicy), so it takes the
        # quick policy back.
        ride_out(self.connection, quick_retry())
        self.concurrency = max(1, concurrency if concurrency is not None else settings.worker_concurrency)
        #: Jobs claimed per round trip in main-thread mode (``WORKER_BATCH``); see docs/worker.md.
        self.batch = max(1, batch if batch is not None else settings.worker_batch)
        if self.concurrency > 1:
            # SIGALRM reaches the main thread only; one watchdog thread times out jobs on job threads.
            self.death_penalty_class = WatchdogDeathPenalty
        elif self.death_penalty_class is UnixSignalDeathPenalty:
            self.death_penalty_class = AlarmDeathPenalty
        #: Jobs claimed ahead of the job threads (``WORKER_CONCURRENCY`` > 1), a quarter of their
        #: number: 10 ms jobs on 10 threads ran at 835/s without, 896/s with 1 ahead, 905/s with 3,
        #: 906/s with 10 (medians of 4 interleaved runs); a stop puts back the ones not started.
        self.lookahead = max(1, self.concurrency // 4) if self.concurrency > 1 else 0
        self.faults = FaultPolicy(self, self.master_timeout)
        self.heartbeats = Heartbeat(self, settings.heartbeat_timeout)
        self.protocol = ClaimProtocol(self, self.heartbeats)
        self.runner = JobRunner(self)
        self.commands = CommandListener(
            self.connection, self.pubsub_channel_name, self.handle_payload, self.name
        )
        #: The sockets of the wait for work under way, which a stop request shuts (:class:`StopCut`).
        self.stop_cut = StopCut(lambda: self.stop_requested)
        self.waits = QueueWaits(self.connection, self.stop_cut)
        self._suspension_checked_at = 0.0
        self._scheduler_stopping = False

    # -- the loop -------------------------------------------------------------------------------

    def work(
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
        # First, so that a stop while starting (waiting for a master, say) is honoured.
        self.install_signal_handlers()
        if threading.current_thread() is threading.main_thread():
            self.runner.install()
        completed = 0
        try:
            self.bootstrap(logging_level, date_format, log_format)
            self.set_dequeue_strategy(dequeue_strategy)
            if with_scheduler:
                self.faults.call(self.start_scheduler, burst, logging_level, date_format, log_format)
            self.faults.call(self.heartbeats.start)
            if self.concurrency > 1:
                completed = self._work_on_threads(burst, max_jobs, max_idle_time)
            else:
                completed = self._work_in_turn(burst, max_jobs, max_idle_time)
        except StopRequested:
            self.log.info("Worker %s: stopping on request", self.name)
        finally:
            self.teardown()
        return bool(completed)

    def _work_in_turn(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        """Main-thread mode: one job (or one ``WORKER_BATCH``) after the other."""
        completed = 0
        pending: list[Pending] = []  # successes not written yet: they ride with the next claim
        ready: list[Started] = []  # claimed (started) and not run yet
        lookahead: InFlight | None = None
        idle_since = time.monotonic()
        try:
            while True:
                # 1. Between jobs: suspension, maintenance, a stop request. Claimed jobs are
                #    started already: they run even when a stop was asked.
                if not ready and self.faults.call(self._between_jobs, burst):
                    self.log.info("Worker %s: stopping on request", self.name)
                    break
                # Busy from the claim on: a SIGTERM from here waits for the jobs.
                self.set_local_state(WorkerStatus.BUSY)
                # 2. Claim: write the last successes and take the next job(s), in one round trip.
                if not ready:
                    wanted = self._wanted(completed, max_jobs)
                    ready = self.faults.call(self.protocol.finish_and_claim, pending, wanted)
                    pending = []
                # 3. Nothing to run: quit (burst, idle limit), or wait for work without taking it.
                if not ready:
                    if burst:
                        # As RQ's worker: idle once the queues are empty (it says so before quitting).
                        self.set_state(WorkerStatus.IDLE)
                        self.log.info("Worker %s: done, quitting", self.name)
                        break
                    if self._idle_too_long(max_idle_time, idle_since):
                        break
                    wanted = self._wanted(completed, max_jobs)
                    ready = self.faults.call(self._wait_for_work, max_idle_time, idle_since, None, wanted)
                    continue
                running, ready = ready, []
                # 4. Batches: send the next claim (with these successes) before running this
                #    batch, so that its round trip overlaps the work.
                ahead = completed + len(running)
                if self.batch > 1 and not self.stop_requested and (max_jobs is None or ahead < max_jobs):
                    lookahead = self._send_lookahead(pending, self._wanted(ahead, max_jobs))
                    if lookahead is not None:
                        pending = []
                # 5. Run: a success waits for the next claim; a fault in a job's own writes
                #    (failure, retry, callbacks) puts the job back once Redis answers.
                for job, queue, execution in running:
                    done = self._run_job(job, queue, execution)
                    if done is not None:
                        pending.append(done)
                    completed += 1
                # 6. Read the look-ahead claim.
                if lookahead is not None:
                    sent, lookahead = lookahead, None
                    ready = self._read_lookahead(sent)
                idle_since = time.monotonic()
                if max_jobs is not None and completed >= max_jobs:
                    self.log.info("Worker %s: finished executing %d jobs, quitting", self.name, completed)
                    break
            # 7. Leaving: write the last successes (waiting for Redis if it is away).
            self.faults.call(self.protocol.flush, pending)
            pending = []
        finally:
            if lookahead is not None:
                # Left by an exception mid-batch: register what the claim took, so that recovery
                # re-queues it if this worker dies.
                pending = lookahead.pending + pending
                try:
                    ready += self.protocol.salvage(lookahead)
                except (RedisError, OSError) as exc:
                    self.log.warning("Worker %s: could not read its last claim: %s", self.name, exc)
            if ready:
                self.log.warning(
                    "Worker %s: %d claimed job(s) not run; recovery re-queues them", self.name, len(ready)
                )
            self._flush_on_the_way_out(pending)
        return completed

    def _work_on_threads(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        """``WORKER_CONCURRENCY`` > 1: keep every job thread fed, one claim for all free slots."""
        threads = JobThreads(self, self.concurrency, self.lookahead)
        completed = 0
        idle_since = time.monotonic()
        pending: list[Pending] = []
        try:
            try:
                while True:
                    # 1. Jobs that ended: their successes ride with the next claim.
                    pending += threads.finished()
                    # 2. Between claims: suspension, maintenance, a stop request; jobs a fault
                    #    cut off on their threads go back to their queues.
                    if self.faults.call(self._between_jobs, burst):
                        break
                    self.faults.recover_cut_off()
                    wanted = threads.free if max_jobs is None else min(threads.free, max_jobs - completed)
                    if max_jobs is not None and completed >= max_jobs:
                        break
                    # 3. Every thread busy and the look-ahead full: wait for a job to end (a stop is
                    #    seen within a second).
                    if wanted <= 0:
                        self.set_local_state(WorkerStatus.BUSY)
                        threads.wait(BUSY_WAIT_SECONDS)
                        continue
                    # 4. Claim: write the successes and take a job for every free thread, and a few
                    #    ahead, so that a thread that ends a job starts the next without a round trip.
                    self.set_local_state(WorkerStatus.BUSY)
                    # Counted before the claim: a job still running may re-queue itself (a retry).
                    busy = threads.busy
                    claimed = self.faults.call(self.protocol.finish_and_claim, pending, wanted)
                    pending = []
                    for started in claimed:
                        threads.start(started)
                    completed += len(claimed)
                    if claimed:
                        idle_since = time.monotonic()
                        continue
                    # 5. Nothing to claim: quit (burst, idle limit) or wait for work or a job's end.
                    if burst and not busy:
                        self.set_state(WorkerStatus.IDLE)
                        break
                    if burst:
                        threads.wait(BUSY_WAIT_SECONDS)
                        continue
                    if not threads.busy and self._idle_too_long(max_idle_time, idle_since):
                        break
                    claimed = self.faults.call(
                        self._wait_for_work, max_idle_time, idle_since, threads, wanted
                    )
                    for started in claimed:
                        threads.start(started)
                    completed += len(claimed)
                    if claimed:
                        idle_since = time.monotonic()
            except StopRequested:
                self.log.info("Worker %s: stopping on request", self.name)
            # 6. Leaving (warm): claimed jobs no thread started go back to the front of their
            #    queues; the running ones end; then their successes are written.
            self.set_local_state(WorkerStatus.BUSY)
            for job, _queue, _execution in reversed(threads.withdraw()):
                self.faults.call(self.faults.put_back, job)
            threads.wait_all()
            pending += threads.finished()
            self.faults.recover_cut_off()
            self.faults.call(self.protocol.flush, pending)
            pending = []
        finally:
            threads.close()
            self._flush_on_the_way_out(pending + threads.finished())
        return completed

    # -- the steps ------------------------------------------------------------------------------

    def _between_jobs(self, burst: bool) -> bool:
        """Suspension and maintenance between jobs; returns whether to stop."""
        if time.monotonic() - self._suspension_checked_at >= self.suspension_check_interval:
            self.check_for_suspension(burst)
            self._suspension_checked_at = time.monotonic()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        return self.stop_requested

    def _wanted(self, completed: int, max_jobs: int | None) -> int:
        """Jobs to claim next: a batch, or fewer when ``max_jobs`` is near."""
        return self.batch if max_jobs is None else max(1, min(self.batch, max_jobs - completed))

    def _idle_too_long(self, max_idle_time: int | None, idle_since: float) -> bool:
        if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
            self.log.info("Worker %s: idle for %d seconds, quitting", self.name, max_idle_time)
            return True
        return False

    def _send_lookahead(self, pending: list[Pending], wanted: int) -> InFlight | None:
        """Send the next claim now; ``None`` (nothing in flight) when the master was lost."""
        try:
            return self.protocol.send_claim(pending, wanted)
        except UNAVAILABLE_ERRORS as exc:
            self.faults.wait_for_master(exc)
            return None  # ``pending`` goes with the next claim

    def _read_lookahead(self, sent: InFlight) -> list[Started]:
        """The jobs of a look-ahead claim; a lost reply or a full Redis: claim again."""
        try:
            return self.protocol.read_claim(sent)
        except UNAVAILABLE_ERRORS as exc:
            # The reply is lost: waiting for the master puts back what the claim took (a phantom
            # claim); the successes go again (they are idempotent) with a new claim.
            self.faults.wait_for_master(exc)
        except OutOfMemoryError:
            pass  # the scripts wrote nothing under maxmemory: send both again, waiting for memory
        return self.faults.call(self.protocol.finish_and_claim, sent.pending, sent.wanted)

    def _run_job(self, job: Job, queue: Queue, execution: Execution) -> Pending | None:
        """Run one claimed job; a Redis fault in its own writes puts it back."""
        try:
            return self.runner.run(job, queue, execution)
        except REDIS_FAULTS as exc:
            self.faults.job_cut_off(job, queue, exc)
            return None

    def _wait_for_work(
        self, max_idle_time: int | None, idle_since: float, threads: JobThreads | None, wanted: int
    ) -> list[Started]:
        """Block until a queue holds a job, without taking it (so nothing is lost if we die).

        On one queue the claim of up to ``wanted`` jobs rides behind the wait; the jobs it
        took are returned (on several queues, none: the loop claims next). With jobs running
        on threads the wait is short, and those threads write their own successes meanwhile.
        """
        timeout = float(self.dequeue_timeout)
        if max_idle_time is not None:
            timeout = max(0.1, min(timeout, max_idle_time - (time.monotonic() - idle_since)))
        if threads is not None and threads.busy:
            with threads.writing_their_own() as waiting:
                if waiting:
                    return self._block_for_work(min(timeout, BUSY_WAIT_SECONDS), wanted)
            return []
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        if self.stop_requested:
            # Asked while busy a moment ago (the claim that found nothing): idle now, so stop
            # at once, as a signal from here on does, rather than after the wait's timeout.
            raise StopRequested()
        return self._block_for_work(timeout, wanted)

    def _block_for_work(self, timeout: float, wanted: int) -> list[Started]:
        keys = [q.key for q in self.ordered_queues]
        if len(keys) == 1:
            return self.protocol.wait_and_claim(keys[0], timeout, wanted)
        # Several queues: a wait on each at once; the loop's next claim takes the job.
        self.waits.wait(keys, timeout)
        return []

    def _flush_on_the_way_out(self, pending: list[Pending]) -> None:
        """One try to write the last successes; what fails is recovered as abandoned (idempotent)."""
        if not pending:
            return
        try:
            self.protocol.flush(pending)
        except REDIS_FAULTS as exc:
            self.log.warning(
                "Worker %s: %d success(es) not written (%s); recovery re-queues them",
                self.name,
                len(pending),
                exc,
            )
