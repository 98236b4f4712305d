"""The fast worker's claim/finish protocol: one round trip claims jobs and writes the last successes.

A claim (:data:`shared.rqmodel.scripts.CLAIM`) pops jobs and marks them started; the successes
of the jobs run since the last claim travel in the same pipeline as one call of
:data:`shared.rqmodel.scripts.FINISH`. In batch mode the claim of the next batch is sent
before the current batch runs (:meth:`ClaimProtocol.send_claim`) and read after it
(:meth:`ClaimProtocol.read_claim`), so the round trip overlaps the work.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, ReadOnlyError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker.base import DequeueStrategy

from shared.connections import raw
from shared.rqmodel import claims
from shared.rqmodel.scripts import WORKER_SCRIPTS

if TYPE_CHECKING:
    from .heartbeats import Heartbeat
    from .worker import FastWorker


@dataclass
class Pending:
    """A finished job whose success writes ride with the next claim."""

    job: Job
    execution: Execution
    args: list[Any]
    #: Writes of its success callback (the stats) that go with it (:mod:`shared.connections.deferred`).
    extra: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class InFlight:
    """A finish-and-claim request sent and not yet answered (batch mode's look-ahead)."""

    pending: list[Pending]
    wanted: int
    #: Callback writes sent ahead of the successes (their replies come first).
    extra: int


Started = tuple[Job, Queue, Execution]

#: Dequeue strategies under which one claim takes its jobs from the queues in turn.
_SPREAD = (DequeueStrategy.ROUND_ROBIN, DequeueStrategy.RANDOM)


class ClaimProtocol:
    """Claims and finishes jobs for ``worker``: one round trip for the last successes and the next claim."""

    def __init__(self, worker: FastWorker, heartbeat: Heartbeat) -> None:
        self.worker = worker
        self.heartbeat = heartbeat
        self.log = worker.log
        #: The class of the jobs this worker claims (``job_class`` with ``func`` cached).
        self.job_class = func_cached(worker.job_class)
        self._held: raw.HeldConnections | None = None
        #: Whether a claim may have run whose reply was not read (:meth:`wait_and_claim`).
        self.unsure = False

    @property
    def held(self) -> raw.HeldConnections:
        """The connection claims and finishes go on, kept out of the worker's pool between them."""
        held = self._held
        if held is None or held.client is not self.worker.connection:
            held = self._held = raw.HeldConnections(self.worker.connection)
        return held

    def _replies(self) -> list[Any]:
        """The replies to the last send; a reply saying the server is no master drops the connection."""
        replies = self.held.read()
        error = raw.first_error(replies)
        if isinstance(error, ReadOnlyError):
            # A demoted master: the next try takes a fresh connection (Sentinel: to the new one).
            self.held.drop()
        return replies

    def _claim(self, wanted: int) -> claims.Claim:
        worker = self.worker
        queues = worker.ordered_queues
        if len(queues) == 1:
            return claims.claim(worker.keys, [queues[0].key], worker.name, worker.key, wanted)
        # Round robin and random take turns within a claim too (random: in this claim's order).
        spread = wanted > 1 and worker.dequeue_strategy in _SPREAD
        return claims.claim(worker.keys, [q.key for q in queues], worker.name, worker.key, wanted, spread)

    def _send(self, pending: list[Pending], claim: tuple[Any, ...] | None) -> int:
        """Send ``pending``'s callback writes, their successes and ``claim``; returns the writes' count.

        The callback writes go once: a call made again (a reloaded script) leaves them out.
        """
        commands = [command for done in pending for command in done.extra]
        extra = len(commands)
        for done in pending:
            done.extra = []
        if pending:
            commands.append(claims.finish(self.worker.keys, self.worker.key, [done.args for done in pending]))
        if claim is not None:
            commands.append(claim)
        self.held.send(raw.pack(commands), len(commands))
        return extra

    def _read(self, extra: int) -> list[Any]:
        """The replies after the ``extra`` callback writes'; a failed callback write is logged, no more."""
        replies = self._replies()
        for reply in replies[:extra]:
            if isinstance(reply, Exception):
                self.log.warning("Worker %s: a success callback's write failed: %s", self.worker.name, reply)
        return replies[extra:]

    def finish_and_claim(self, pending: list[Pending], wanted: int) -> list[Started]:
        """Write ``pending``'s successes and claim up to ``wanted`` jobs, in one round trip."""
        if wanted <= 0:
            self.flush(pending)
            return []
        claim = self._claim(wanted)
        while True:
            replies = self._read(self._send(pending, claim.command))
            error = raw.first_error(replies)
            if isinstance(error, NoScriptError):
                # Redis restarted or flushed its scripts; none of them ran.
                self._load_scripts()
                continue
            if error is not None:
                raise error
            if pending and not self._finished(pending, replies[0], replies[-1]):
                pending = []
                continue
            return self._parse_claimed(replies[-1])

    def _finished(self, pending: list[Pending], finished: list[Any], raw_claim: Any) -> bool:
        """Book the success writes; ``False`` when the claim must be made again."""
        for done, ok in zip(pending, finished, strict=True):
            self._after_finish(done, bool(ok))
        # RQ's path just enqueued dependents the claim could not see yet.
        return claims.claimed_any(raw_claim) or all(finished)

    def send_claim(self, pending: list[Pending], wanted: int) -> InFlight:
        """Send ``pending``'s successes and a claim of up to ``wanted`` jobs; :meth:`read_claim` reads."""
        claim = self._claim(wanted)
        return InFlight(pending, wanted, self._send(pending, claim.command))

    def read_claim(self, inflight: InFlight) -> list[Started]:
        """Read the answer to :meth:`send_claim`: the jobs claimed (registered as executions)."""
        replies = self._read(inflight.extra)
        error = raw.first_error(replies)
        if isinstance(error, NoScriptError):
            self._load_scripts()
            return self.finish_and_claim(inflight.pending, inflight.wanted)
        if error is not None:
            raise error
        if inflight.pending and not self._finished(inflight.pending, replies[0], replies[-1]):
            return self.finish_and_claim([], inflight.wanted)
        return self._parse_claimed(replies[-1])

    def wait_and_claim(self, queue_key: str, timeout: float, wanted: int) -> list[Started]:
        """Block until ``queue_key`` holds a job, then claim up to ``wanted`` jobs: one round trip.

        The claim is sent with the wait and runs when the wait ends (Redis runs a blocked
        client's next command after the blocking one), so a job that arrives at an idle worker
        starts without a second round trip. The wait (``BLMOVE`` of the list onto itself)
        takes nothing: a worker that dies waiting loses no job. A read cut short (a signal, a
        lost connection) may leave a claim made and unread: :attr:`unsure` says so, and the
        worker puts such jobs back (:meth:`FaultPolicy.recover_phantom_claims`).
        """
        claim = self._claim(wanted)
        wait = ("BLMOVE", queue_key, queue_key, "RIGHT", "RIGHT", f"{timeout:.3f}")
        self.unsure = True
        self.held.send(raw.pack([wait, claim.command]), 2)
        # A stop request ends the wait at once, even one whose raise was lost (StopCut).
        with self.worker.stop_cut.waiting([self.held.socket()]):
            replies = self._replies()
        self.unsure = False
        error = raw.first_error(replies)
        if isinstance(error, NoScriptError):
            # Redis restarted or flushed its scripts: load them, then claim without waiting.
            self._load_scripts()
            return self.finish_and_claim([], wanted)
        if error is not None:
            raise error
        return self._parse_claimed(replies[1])

    def salvage(self, inflight: InFlight) -> list[Started]:
        """Read a look-ahead claim left by an exception, so that its jobs are registered."""
        raw_claim = self._read(inflight.extra)[-1]
        return self._parse_claimed(raw_claim)

    def _parse_claimed(self, reply: Any) -> list[Started]:
        """Jobs, queues and executions of a claim script's reply, registered as this worker's."""
        worker = self.worker
        by_key = {q.key: q for q in worker.ordered_queues}
        started = []
        for queue_key, job, execution, ttl in claims.claimed_jobs(
            reply, self.job_class, worker.connection, worker.serializer, worker.name
        ):
            if ttl > self.heartbeat.busy_ttl:
                self.heartbeat.busy_ttl = ttl
            queue = by_key[queue_key]
            worker.executions[execution.id] = execution
            worker.reorder_queues(reference_queue=queue)
            self.log.debug("Worker %s: %s: %s (%s)", worker.name, queue.name, job.description, job.id)
            started.append((job, queue, execution))
        return started

    def _load_scripts(self) -> None:
        self.held.load_scripts(WORKER_SCRIPTS)

    def flush(self, pending: list[Pending]) -> None:
        """Write ``pending``'s successes on their own (no claim)."""
        if not pending:
            return
        while True:
            replies = self._read(self._send(pending, None))
            if isinstance(replies[0], NoScriptError):
                self._load_scripts()
                continue
            if isinstance(replies[0], Exception):
                raise replies[0]
            break
        for done, finished in zip(pending, replies[0], strict=True):
            self._after_finish(done, bool(finished))

    def _after_finish(self, pending: Pending, finished: bool) -> None:
        worker = self.worker
        job = pending.job
        if not finished:
            # Dependents appeared: RQ's own path moves them to ready atomically.
            queue = worker.queue_for(job.origin)
            worker.handle_job_success(job, queue, queue.started_job_registry, pending.execution)
        else:
            worker.executions.pop(pending.execution.id, None)
            worker.successful_job_count += 1
        if job.webhooks:
            job.send_webhooks(JobStatus.FINISHED)
        self.log.debug("Worker %s: %s: Job OK (%s)", worker.name, job.origin, job.id)


def func_cached(job_class: type[Job]) -> type[Job]:
    """``job_class`` whose ``func`` imports each dotted path once per worker, not on every access.

    RQ's ``Job.func`` calls ``import_attribute`` each time it is read (twice per job).
    """
    cache: dict[str, Any] = {}
    read_func = inspect.getattr_static(job_class, "func").fget

    def func(job: Job) -> Any:
        name = job.func_name
        if name is None or job.instance:
            return read_func(job)
        found = cache.get(name)
        if found is None:
            found = cache[name] = read_func(job)
        return found

    cached: type[Job] = type(job_class.__name__, (job_class,), {"func": property(func)})
    cached.__qualname__ = job_class.__qualname__
    return cached
