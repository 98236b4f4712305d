"""The fast worker's claim/finish protocol: one round trip claims jobs and writes the last successes.

A claim (:data:`shared.rqmodel.scripts.CLAIM`) pops jobs and marks them started; the successes
of the jobs run since the last claim travel in the same pipeline as one call of
:data:`shared.rqmodel.scripts.FINISH`. In batch mode the claim of the next batch is sent
before the current batch runs (:meth:`ClaimProtocol.send_claim`) and read after it
(:meth:`ClaimProtocol.read_claim`), so the round trip overlaps the work.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError
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


@dataclass
class InFlight:
    """A finish-and-claim request sent and not yet answered (batch mode's look-ahead)."""

    checkout: raw.Checkout
    pending: list[Pending]
    wanted: int
    claim: claims.Claim
    count: int


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

    def _claim(self, wanted: int) -> claims.Claim:
        worker = self.worker
        queues = worker.ordered_queues
        if len(queues) == 1:
            return claims.claim(worker.keys, [queues[0].key], worker.name, worker.key, wanted)
        # Round robin and random take turns within a claim too (random: in this claim's order).
        spread = wanted > 1 and worker.dequeue_strategy in _SPREAD
        return claims.claim(worker.keys, [q.key for q in queues], worker.name, worker.key, wanted, spread)

    def _finish_command(self, pending: list[Pending]) -> tuple[Any, ...]:
        return claims.finish(self.worker.keys, self.worker.key, [done.args for done in pending])

    def finish_and_claim(self, pending: list[Pending], wanted: int) -> list[Started]:
        """Write ``pending``'s successes and claim up to ``wanted`` jobs, in one round trip."""
        if wanted <= 0:
            self.flush(pending)
            return []
        claim = self._claim(wanted)
        while True:
            commands = [self._finish_command(pending), claim.command] if pending else [claim.command]
            replies = raw.Checkout(self.worker.connection).send(raw.pack(commands)).read(len(commands))
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
            return self._parse_claimed(replies[-1], claim)

    def _finished(self, pending: list[Pending], finished: list[Any], raw_claim: Any) -> bool:
        """Book the success writes; ``False`` when the claim must be made again."""
        for done, ok in zip(pending, finished, strict=True):
            self._after_finish(done, bool(ok))
        # RQ's path just enqueued dependents the claim could not see yet.
        return bool(raw_claim) or all(finished)

    def send_claim(self, pending: list[Pending], wanted: int) -> InFlight:
        """Send ``pending``'s successes and a claim of up to ``wanted`` jobs; :meth:`read_claim` reads."""
        claim = self._claim(wanted)
        commands = [self._finish_command(pending), claim.command] if pending else [claim.command]
        checkout = raw.Checkout(self.worker.connection).send(raw.pack(commands))
        return InFlight(checkout, pending, wanted, claim, len(commands))

    def read_claim(self, inflight: InFlight) -> list[Started]:
        """Read the answer to :meth:`send_claim`: the jobs claimed (registered as executions)."""
        replies = inflight.checkout.read(inflight.count)
        error = raw.first_error(replies)
        if isinstance(error, NoScriptError):
            self._load_scripts()
            return self.finish_and_claim(inflight.pending, inflight.wanted)
        if error is not None:
            raise error
        if inflight.pending and not self._finished(inflight.pending, replies[0], replies[-1]):
            return self.finish_and_claim([], inflight.wanted)
        return self._parse_claimed(replies[-1], inflight.claim)

    def salvage(self, inflight: InFlight) -> list[Started]:
        """Read a look-ahead claim left by an exception, so that its jobs are registered."""
        raw_claim = inflight.checkout.read(inflight.count)[-1]
        return self._parse_claimed(raw_claim, inflight.claim)

    def _parse_claimed(self, reply: Any, claim: claims.Claim) -> list[Started]:
        """Jobs, queues and executions of a claim script's reply, registered as this worker's."""
        worker = self.worker
        by_key = {q.key: q for q in worker.ordered_queues}
        started = []
        for queue_key, job, execution, ttl in claims.claimed_jobs(
            reply, self.job_class, worker.connection, worker.serializer, worker.name, claim
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
        pool = self.worker.connection.connection_pool
        connection = pool.get_connection()
        try:
            raw.load_scripts(connection, WORKER_SCRIPTS)
        finally:
            pool.release(connection)

    def flush(self, pending: list[Pending]) -> None:
        """Write ``pending``'s successes on their own (no claim)."""
        if not pending:
            return
        command = self._finish_command(pending)
        while True:
            replies = raw.Checkout(self.worker.connection).send(raw.pack([command])).read(1)
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
