"""The fast worker's claim/finish protocol: one round trip claims jobs and writes the last successes.

A claim (:data:`shared.rqmodel.scripts.CLAIM`) pops jobs and marks them started; the successes
of the jobs run since the last claim travel in the same pipeline as one call of
:data:`shared.rqmodel.scripts.FINISH`. In batch mode the claim of the next batch is sent
before the current batch runs (:meth:`ClaimProtocol._start_claim`) and read after it
(:meth:`ClaimProtocol._end_claim`), so the round trip overlaps the work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import NoScriptError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker.base import DequeueStrategy

from shared.connections import raw
from shared.rqmodel import claims
from shared.rqmodel.keys import Keys
from shared.rqmodel.scripts import WORKER_SCRIPTS


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
    """Claiming and finishing jobs for an RQ worker class (mixed in before RQ's worker)."""

    # Attributes of the worker this mixin is part of.
    log: logging.Logger
    connection: Redis
    name: str
    key: str
    serializer: Any
    job_class: Any
    queue_class: Any
    executions: dict[str, Execution]
    successful_job_count: int
    keys: Keys
    stop_requested: bool
    ordered_queues: list[Queue]
    dequeue_strategy: DequeueStrategy | None
    _claimed_job_class: type[Job]
    _busy_ttl: int

    if TYPE_CHECKING:  # RQ's BaseWorker methods this mixin calls

        def reorder_queues(self, reference_queue: Queue) -> None: ...
        def handle_job_success(
            self, job: Job, queue: Queue, started_job_registry: Any, execution: Any
        ) -> None: ...

    def _claim(self, wanted: int) -> claims.Claim:
        queues = self.ordered_queues
        if len(queues) == 1:
            return claims.claim(self.keys, [queues[0].key], self.name, self.key, wanted)
        # Round robin and random take turns within a claim too (random: in this claim's order).
        spread = wanted > 1 and self.dequeue_strategy in _SPREAD
        return claims.claim(self.keys, [q.key for q in queues], self.name, self.key, wanted, spread)

    def _finish_command(self, pending: list[Pending]) -> tuple[Any, ...]:
        return claims.finish(self.keys, self.key, [done.args for done in pending])

    def _finish_and_claim(self, pending: list[Pending], wanted: int) -> list[Started]:
        """Write ``pending``'s successes and claim up to ``wanted`` jobs, in one round trip."""
        if self.stop_requested:
            for done in pending:
                self._flush(done)
            return []
        claim = self._claim(wanted)
        while True:
            commands = [self._finish_command(pending), claim.command] if pending else [claim.command]
            replies = raw.Checkout(self.connection).send(raw.pack(commands)).read(len(commands))
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

    def _start_claim(self, pending: list[Pending], wanted: int) -> InFlight | None:
        """Send ``pending``'s successes and a claim of up to ``wanted`` jobs; :meth:`_end_claim` reads."""
        claim = self._claim(wanted)
        commands = [self._finish_command(pending), claim.command] if pending else [claim.command]
        checkout = raw.Checkout(self.connection).send(raw.pack(commands))
        return InFlight(checkout, pending, wanted, claim, len(commands))

    def _end_claim(self, inflight: InFlight) -> list[Started]:
        """Read the answer to :meth:`_start_claim`: the jobs claimed (registered as executions)."""
        replies = inflight.checkout.read(inflight.count)
        error = raw.first_error(replies)
        if isinstance(error, NoScriptError):
            self._load_scripts()
            return self._finish_and_claim(inflight.pending, inflight.wanted)
        if error is not None:
            raise error
        if inflight.pending and not self._finished(inflight.pending, replies[0], replies[-1]):
            return self._finish_and_claim([], inflight.wanted)
        return self._parse_claimed(replies[-1], inflight.claim)

    def _parse_claimed(self, reply: Any, claim: claims.Claim) -> list[Started]:
        """Jobs, queues and executions of a claim script's reply, registered as this worker's."""
        by_key = {q.key: q for q in self.ordered_queues}
        started = []
        for queue_key, job, execution, ttl in claims.claimed_jobs(
            reply, self._claimed_job_class, self.connection, self.serializer, self.name, claim
        ):
            if ttl > self._busy_ttl:
                self._busy_ttl = ttl
            queue = by_key[queue_key]
            self.executions[execution.id] = execution
            self.reorder_queues(reference_queue=queue)
            self.log.debug("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
            started.append((job, queue, execution))
        return started

    def _load_scripts(self) -> None:
        connection = self.connection.connection_pool.get_connection()
        try:
            raw.load_scripts(connection, WORKER_SCRIPTS)
        finally:
            self.connection.connection_pool.release(connection)

    def _flush(self, pending: Pending) -> None:
        """Write ``pending``'s success on its own."""
        command = self._finish_command([pending])
        while True:
            replies = raw.Checkout(self.connection).send(raw.pack([command])).read(1)
            if isinstance(replies[0], NoScriptError):
                self._load_scripts()
                continue
            if isinstance(replies[0], Exception):
                raise replies[0]
            break
        [finished] = replies[0]
        self._after_finish(pending, bool(finished))

    def _after_finish(self, pending: Pending, finished: bool) -> None:
        job = pending.job
        if not finished:
            # Dependents appeared: RQ's own path moves them to ready atomically.
            queue = self.queue_class(
                job.origin, connection=self.connection, job_class=self.job_class, serializer=self.serializer
            )
            self.handle_job_success(job, queue, queue.started_job_registry, pending.execution)
        else:
            self.executions.pop(pending.execution.id, None)
            self.successful_job_count += 1
        if job.webhooks:
            job.send_webhooks(JobStatus.FINISHED)
        self.log.debug("Worker %s: %s: Job OK (%s)", self.name, job.origin, job.id)
