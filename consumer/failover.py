"""Workers that survive a Redis failover: reconnect to the new master, or exit for a supervisor.

Stock RQ workers handle a lost master badly: a connection error outside the blocking pop
ends the work loop (``found an unhandled exception, quitting``, or ``Redis connection
timeout, quitting`` with exit status 0), and inside it they retry forever with a backoff
that grows to a minute. :class:`FailoverMixin` turns every such error into one wait: poll
for a master (through Sentinel, the client asks for the new address on each new
connection) with a short backoff, carry on where the worker was, and exit with
:data:`EXIT_NO_MASTER` when no master answers for ``WORKER_MASTER_TIMEOUT`` seconds.

A job whose bookkeeping was cut off by the failover is put back at the front of its queue
once the new master answers, unless the new master shows it finished or queued; jobs are
idempotent, so a second run writes nothing twice.

A full Redis (``maxmemory`` reached under ``noeviction``: ``OOM`` replies, nothing written) is
waited out the same way: the refused call is made again with a backoff, and past
``WORKER_MASTER_TIMEOUT`` the worker exits with :data:`EXIT_NO_MASTER`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError, StopRequested
from rq.job import Job, JobStatus

from shared.connections import UNAVAILABLE_ERRORS, quick_retry, ride_out
from shared.rqmodel.internals import WorkerInternals
from shared.rqmodel.keys import KEYS, Keys, parse_member

from .context import get_settings

logger = logging.getLogger(__name__)

#: Exit status of a worker that found no master for longer than its limit (``EX_UNAVAILABLE``).
EXIT_NO_MASTER = 69

_FIRST_DELAY = 0.1
_MAX_DELAY = 1.0
_SETTLED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


class _Backoff:
    """The waits of one stretch of refused writes (a full Redis)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.delay = _FIRST_DELAY
        self.logged = False


class FailoverMixin(WorkerInternals):
    """Put it before the RQ worker class: ``class W(FailoverMixin, SimpleWorker)``."""

    #: The key names of the namespace this worker serves.
    keys: Keys = KEYS

    #: Seconds without a master before the worker exits; ``None`` means ``WORKER_MASTER_TIMEOUT``.
    master_timeout: float | None = None

    # Attributes of rq's BaseWorker that this mixin uses.
    connection: Any
    log: Any
    name: str
    executions_key: str
    job_class: Any
    queue_class: Any
    serializer: Any

    def __init__(self, *args: Any, master_timeout: float | None = None, **kwargs: Any) -> None:
        # Set before RQ's __init__, which sizes the socket timeout from dequeue_timeout.
        if master_timeout is not None:
            self.master_timeout = master_timeout
        elif self.master_timeout is None:
            self.master_timeout = get_settings().worker_master_timeout
        self.failovers = 0
        self._cut_off: list[Job] = []
        self._cut_off_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        # consumer.settings gives RQ a client that waits out outages inside redis-py (for RQ's
        # stock workers); this worker sees each error itself, to wait for a master and put back
        # what a failover cut off, so it takes the quick policy back.
        ride_out(self.connection, quick_retry())

    @property
    def dequeue_timeout(self) -> int:
        """Block on the master for at most half the master timeout (RQ: the worker TTL - 15 s).

        A master that stops answering without closing the connection (stopped, partitioned)
        then shows up as a socket timeout well within ``WORKER_MASTER_TIMEOUT``.
        """
        base: int = super().dequeue_timeout  # type: ignore[misc]
        return max(1, min(base, int(float(self.master_timeout or 60) / 2)))

    def wait_for_master(self, error: BaseException) -> None:
        """Block until a master answers; ``SystemExit(EXIT_NO_MASTER)`` after ``master_timeout``."""
        limit = float(self.master_timeout or 0)
        started = time.monotonic()
        self.log.warning(
            "Worker %s: lost the Redis master (%s: %s); reconnecting", self.name, type(error).__name__, error
        )
        delay = _FIRST_DELAY
        while True:
            if self.stop_requested:
                raise StopRequested()
            try:
                role = self.connection.execute_command("ROLE")
                if role and role[0] in (b"master", "master"):
                    break
                reason = "the server is a replica"
            except UNAVAILABLE_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            waited = time.monotonic() - started
            if waited >= limit:
                self.log.error(
                    "Worker %s: no Redis master for %.1fs (limit %ss, last: %s); exiting with %d",
                    self.name,
                    waited,
                    limit,
                    reason,
                    EXIT_NO_MASTER,
                )
                raise SystemExit(EXIT_NO_MASTER)
            time.sleep(min(delay, max(0.0, limit - waited)))
            delay = min(delay * 2, _MAX_DELAY)
        self.failovers += 1
        self.log.warning("Worker %s: Redis master back after %.1fs", self.name, time.monotonic() - started)
        try:
            self.recover_phantom_claims()
        except UNAVAILABLE_ERRORS as exc:
            self.log.warning("Worker %s: could not check its claims yet: %s", self.name, exc)

    def wait_for_memory(self, error: BaseException, backoff: _Backoff) -> None:
        """One backoff step while Redis refuses writes (``maxmemory``); exit after ``master_timeout``."""
        if self.stop_requested:
            raise StopRequested()
        limit = float(self.master_timeout or 0)
        waited = time.monotonic() - backoff.started
        if waited >= limit:
            self.log.error(
                "Worker %s: Redis refused writes for %.1fs (limit %ss: %s); exiting with %d",
                self.name,
                waited,
                limit,
                error,
                EXIT_NO_MASTER,
            )
            raise SystemExit(EXIT_NO_MASTER)
        if not backoff.logged:
            backoff.logged = True
            self.log.warning("Worker %s: Redis is full (%s); waiting for memory", self.name, error)
        time.sleep(min(backoff.delay, max(0.0, limit - waited)))
        backoff.delay = min(backoff.delay * 2, _MAX_DELAY)

    def recover_phantom_claims(self) -> list[str]:
        """Put back the jobs the master says this worker runs but it never received.

        A claim (pop + start) that the old master executed and replicated but whose reply never
        arrived leaves a job "started" by a live worker that knows nothing of it: no worker
        would ever run it, and no dead-worker recovery applies.
        """
        running = {getattr(e, "id", None) for e in getattr(self, "executions", {}).values()}
        recovered = []
        for member in self.connection.smembers(self.executions_key):
            job_id, execution_id = parse_member(member)
            if execution_id in running:
                continue
            with self.connection.pipeline() as pipe:
                pipe.srem(self.executions_key, member)
                pipe.delete(self.keys.execution(job_id, execution_id))
                pipe.execute()
            try:
                job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
            except NoSuchJobError:
                continue
            queue = self.queue_class(
                job.origin, connection=self.connection, job_class=self.job_class, serializer=self.serializer
            )
            if self.recover_job(job, queue):
                recovered.append(job_id)
        return recovered

    def _retrying(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` until it gets through, waiting for a master between tries.

        Only the main thread waits (and may exit); job threads let the error through.
        """
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        full: _Backoff | None = None
        while True:
            try:
                result = method(*args, **kwargs)
            except UNAVAILABLE_ERRORS as exc:
                self.wait_for_master(exc)
                continue
            except OutOfMemoryError as exc:
                full = full or _Backoff()
                self.wait_for_memory(exc, full)
                continue
            if full is not None:
                self.log.warning(
                    "Worker %s: Redis takes writes again after %.1fs",
                    self.name,
                    time.monotonic() - full.started,
                )
            return result

    # The Redis entry points of consumer.worker.FastWorker's own loop: the checks between jobs,
    # running a job, claiming the next (with the previous job's success writes), waiting for
    # work, writing a success on its own. Retrying them with the same arguments is what that
    # loop does itself after a connection error; a job cut off mid-way is recovered instead.

    def _loop_checks(self, burst: bool) -> bool:
        return bool(self._retrying(super()._loop_checks, burst))  # type: ignore[misc]

    def _execute(self, job: Job, queue: Queue, execution: Any) -> Any:
        try:
            return super()._execute(job, queue, execution)  # type: ignore[misc]
        except (*UNAVAILABLE_ERRORS, OutOfMemoryError) as exc:
            if threading.current_thread() is not threading.main_thread():
                self._cut_off_in_thread(job, exc)
                return None
            if not isinstance(exc, OutOfMemoryError):
                self.wait_for_master(exc)
            # A full Redis refused the job's failure or retry writes: put it back once it can.
            self._retrying(self.recover_job, job, queue)
            return None

    def _finish_and_claim(self, *args: Any) -> Any:
        self._recover_cut_off()
        return self._retrying(super()._finish_and_claim, *args)  # type: ignore[misc]

    def _start_claim(self, pending: list[Any], wanted: int) -> Any:
        self._recover_cut_off()
        try:
            return super()._start_claim(pending, wanted)  # type: ignore[misc]
        except UNAVAILABLE_ERRORS as exc:
            if threading.current_thread() is not threading.main_thread():
                raise
            self.wait_for_master(exc)
            return None  # nothing in flight: the caller sends ``pending`` with its next claim

    def _end_claim(self, inflight: Any) -> Any:
        try:
            return super()._end_claim(inflight)  # type: ignore[misc]
        except UNAVAILABLE_ERRORS as exc:
            if threading.current_thread() is not threading.main_thread():
                raise
            # The claim's reply is lost: waiting for the master puts back what it took (a
            # phantom claim); the successes go again (they are idempotent) with a new claim.
            self.wait_for_master(exc)
            return self._finish_and_claim(inflight.pending, inflight.wanted)
        except OutOfMemoryError:
            if threading.current_thread() is not threading.main_thread():
                raise
            # A full Redis refused the successes and the claim as a whole (the scripts write
            # nothing under maxmemory): send both again, waiting for memory in between.
            return self._finish_and_claim(inflight.pending, inflight.wanted)

    def _wait_for_work(self, max_idle_time: int | None, idle_since: float) -> None:
        self._retrying(super()._wait_for_work, max_idle_time, idle_since)  # type: ignore[misc]

    def _flush(self, pending: Any) -> None:
        try:
            self._retrying(super()._flush, pending)  # type: ignore[misc]
        except (*UNAVAILABLE_ERRORS, OutOfMemoryError) as exc:
            # Only a job thread gets here: the main thread waits inside _retrying.
            self._cut_off_in_thread(pending.job, exc)

    def _cut_off_in_thread(self, job: Job, error: BaseException) -> None:
        """A job thread lost the master mid-job: the main thread recovers the job later."""
        self.log.warning("Worker %s: job %s cut off by a lost master (%s)", self.name, job.id, error)
        with self._cut_off_lock:
            self._cut_off.append(job)

    def _recover_cut_off(self) -> None:
        """Recover the jobs job threads could not finish (main thread, master reachable or waited for)."""
        while self._cut_off:
            with self._cut_off_lock:
                job = self._cut_off.pop()
            queue = self.queue_class(
                job.origin, connection=self.connection, job_class=self.job_class, serializer=self.serializer
            )
            self._retrying(self.recover_job, job, queue)

    def register_birth(self) -> None:
        """Wait for a master at start-up instead of crashing."""
        self._retrying(super().register_birth)  # type: ignore[misc]

    def subscribe(self) -> None:
        """Subscribe to the command channel once a master answers."""
        self._retrying(super().subscribe)  # type: ignore[misc]

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """A state write outside a pipeline waits for a master instead of ending the worker."""
        if pipeline is not None or self.in_horse:
            super().set_state(state, pipeline)  # type: ignore[misc]
            return
        self._retrying(super().set_state, state)  # type: ignore[misc]

    def check_for_suspension(self, burst: bool) -> None:
        """Check ``rq suspend`` once a master answers."""
        self._retrying(super().check_for_suspension, burst)  # type: ignore[misc]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """A heartbeat outside a pipeline waits for a master instead of ending the work loop."""
        if pipeline is not None or self.in_horse:
            super().heartbeat(timeout, pipeline)  # type: ignore[misc]
            return
        self._retrying(super().heartbeat, timeout)  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        """Registry clean-up; after a lost master it runs again next time."""
        try:
            super().run_maintenance_tasks()  # type: ignore[misc]
        except UNAVAILABLE_ERRORS as exc:
            self.wait_for_master(exc)
        except OutOfMemoryError as exc:
            self.log.warning("Worker %s: registry clean-up put off, Redis is full: %s", self.name, exc)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, with the errors it does not retry (state writes, ``READONLY``) retried."""
        full: _Backoff | None = None
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
            except UNAVAILABLE_ERRORS as exc:
                self.wait_for_master(exc)
            except OutOfMemoryError as exc:
                full = full or _Backoff()
                self.wait_for_memory(exc, full)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job``; when the master went away meanwhile, make sure the job is not stranded."""
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        except (*UNAVAILABLE_ERRORS, OutOfMemoryError) as exc:
            if self.horse_pid:
                self.wait_for_horse()  # type: ignore[attr-defined]
                self.forget_horse()
            if not isinstance(exc, OutOfMemoryError):
                self.wait_for_master(exc)
            self._retrying(self.recover_job, job, queue)

    def recover_job(self, job: Job, queue: Queue) -> bool:
        """Put ``job`` back at the front of ``queue`` unless the master shows it settled or queued."""
        executions = getattr(self, "executions", {})
        for execution_id, execution in list(executions.items()):
            if getattr(execution, "job_id", None) == job.id:
                executions.pop(execution_id, None)
        try:
            status = job.get_status(refresh=True)
        except InvalidJobOperation:
            self.log.warning("Worker %s: job %s is not on the new master", self.name, job.id)
            return False
        if status in _SETTLED:
            return False
        if status == JobStatus.QUEUED and self.connection.lpos(queue.key, job.id) is not None:
            return False
        if status not in (JobStatus.QUEUED, JobStatus.STARTED):
            return False
        # The registry holds "<job id>:<execution id>" members. Match them by job id rather than
        # through RQ's execution hashes: after a failover the new master may lack those hashes
        # (asynchronous replication), and rq raises for a missing one.
        started_key = queue.started_job_registry.key
        stale = [
            member
            for member in self.connection.zrange(started_key, 0, -1)
            if (member.decode() if isinstance(member, bytes) else str(member)).split(":", 1)[0] == job.id
        ]
        with self.connection.pipeline() as pipe:
            # enqueue_job opens the transaction (MULTI), so it goes first.
            queue.enqueue_job(job, pipeline=pipe, at_front=True)
            if stale:
                pipe.zrem(started_key, *stale)
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            pipe.execute()
        self.log.warning(
            "Worker %s: job %s (%s) put back on %s after the failover",
            self.name,
            job.id,
            status.value,
            queue.name,
        )
        return True

    def teardown(self) -> None:
        """Register death if a master answers; never block the exit on it."""
        try:
            super().teardown()  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            self.log.warning("Worker %s: could not register its death: %s", self.name, exc)


class FailoverWorker(FailoverMixin, Worker):
    """RQ's forking worker with failover handling."""


class FailoverSimpleWorker(FailoverMixin, SimpleWorker):
    """RQ's in-process worker with failover handling."""
