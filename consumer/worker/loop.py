"""The fast worker's loop: claim, run, finish; in batches or on threads; wait without taking jobs."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.exceptions
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty, UnixSignalDeathPenalty
from rq.worker import SimpleWorker
from rq.worker.base import DequeueStrategy, WorkerStatus

from shared.rqmodel.internals import WorkerInternals
from shared.rqmodel.keys import KEYS, Keys

from ..context import get_settings
from .execution import AlarmDeathPenalty, JobExecution, func_cached
from .heartbeats import Heartbeats
from .protocol import ClaimProtocol, InFlight, Pending, Started


class FastWorkerBase(Heartbeats, JobExecution, ClaimProtocol, WorkerInternals, SimpleWorker):
    """An RQ worker that claims and finishes each job in one round trip, without forking."""

    #: Seconds between suspension checks (stock RQ checks before every job).
    suspension_check_interval = 1.0
    #: The key names of the namespace this worker serves.
    keys: Keys = KEYS

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
        #: The class of the jobs this worker claims (``job_class`` with ``func`` cached).
        self._claimed_job_class = func_cached(self.job_class)
        self._suspension_checked_at = 0.0
        self._beats_stop = threading.Event()
        self._beats_thread: threading.Thread | None = None
        self._busy_ttl = 0
        self._in_perform = False
        self._kill_requested = False
        self._slots = threading.Semaphore(self.concurrency)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

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
        self.set_dequeue_strategy(dequeue_strategy)
        if with_scheduler:
            self.start_scheduler(burst, logging_level, date_format, log_format)
        self.install_signal_handlers()
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

    def _loop_checks(self, burst: bool) -> bool:
        """Suspension and maintenance between jobs; returns whether to stop."""
        if time.monotonic() - self._suspension_checked_at >= self.suspension_check_interval:
            self.check_for_suspension(burst)
            self._suspension_checked_at = time.monotonic()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        return self.stop_requested

    def _run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        completed = 0
        pending: list[Pending] = []
        ready: list[Started] = []
        inflight: InFlight | None = None
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    # Claimed jobs are started already: run them all, even when asked to stop.
                    if not ready and self._loop_checks(burst):
                        self.log.info("Worker %s: stopping on request", self.name)
                        break
                    # Busy before the claim: a SIGTERM arriving now waits for the jobs.
                    self.set_local_state(WorkerStatus.BUSY)
                    if not ready:
                        ready = self._finish_and_claim(pending, self._wanted(completed, max_jobs))
                        pending = []
                    if not ready:
                        if burst:
                            # As RQ's worker: idle once the queues are empty (it says so before quitting).
                            self.set_state(WorkerStatus.IDLE)
                            self.log.info("Worker %s: done, quitting", self.name)
                            break
                        if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                            self.log.info(
                                "Worker %s: idle for %d seconds, quitting", self.name, max_idle_time
                            )
                            break
                        self._wait_for_work(max_idle_time, idle_since)
                        continue
                    running, ready = ready, []
                    # Batches: claim the next batch (with the last one's successes) while this
                    # one runs, so the round trip overlaps the work.
                    ahead = completed + len(running)
                    if self.batch > 1 and not self.stop_requested and (max_jobs is None or ahead < max_jobs):
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
                        self.log.info("Worker %s: finished executing %d jobs, quitting", self.name, completed)
                        break
                except StopRequested:
                    break
                except redis.exceptions.TimeoutError:
                    self.log.error("Worker %s: Redis connection timeout, quitting...", self.name)
                    break
                except redis.exceptions.ConnectionError as exc:
                    self.log.error("Worker %s: Redis unreachable (%s); retrying in 1s", self.name, exc)
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
                    raw_claim = inflight.checkout.read(inflight.count)[-1]
                    ready += self._parse_claimed(raw_claim, inflight.claim)
                except Exception:
                    self.log.exception("Worker %s: could not read its last claim", self.name)
            if ready:
                self.log.warning(
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
                    self.set_local_state(WorkerStatus.BUSY)
                    try:
                        claimed = self._finish_and_claim([], 1)
                    except BaseException:
                        self._slots.release()
                        raise
                    if not claimed:
                        self._slots.release()
                        if burst:
                            if not in_flight:
                                self.set_state(WorkerStatus.IDLE)
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
                    self.log.error("Worker %s: Redis unreachable (%s); retrying in 1s", self.name, exc)
                    time.sleep(1)
        finally:
            pool.shutdown(wait=True)
        return completed

    def _wait_for_work(self, max_idle_time: int | None, idle_since: float) -> None:
        """Block until a queue holds a job, without taking it (so nothing is lost if we die)."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        timeout = float(self.dequeue_timeout)
        if max_idle_time is not None:
            timeout = max(0.1, min(timeout, max_idle_time - (time.monotonic() - idle_since)))
        keys = [q.key for q in self.ordered_queues]
        if len(keys) == 1:
            # BLMOVE RIGHT->RIGHT of a list onto itself is a no-op move that blocks until non-empty.
            self.connection.blmove(keys[0], keys[0], timeout, "RIGHT", "RIGHT")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested:
            # LMPOP would take the job; instead ask for lengths, then block briefly on each queue.
            with self.connection.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                if any(pipe.execute()):
                    return
            for key in keys:
                if self.connection.blmove(key, key, 0.2 / len(keys) + 0.05, "RIGHT", "RIGHT") is not None:
                    return
