"""RQ's ``SimpleWorker`` as :class:`~.worker.FastWorker` meets it: its Redis calls through the
fault policy, RQ's commands, and stops that never wait on a thread or process unbounded.

These are the methods of RQ's worker that RQ's own code calls (its CLI, its signal handlers,
its command listener); the loop and its steps are in :mod:`.worker`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from redis.client import Pipeline
from redis.exceptions import OutOfMemoryError, RedisError
from rq.command import parse_payload
from rq.exceptions import StopRequested
from rq.queue import Queue
from rq.suspension import is_suspended
from rq.worker import SimpleWorker
from rq.worker.base import WorkerStatus

from shared.connections import UNAVAILABLE_ERRORS
from shared.keys import KEYS, Keys
from shared.rqmodel.internals import WorkerInternals, scheduler_process

from .commands import CommandListener
from .execution import JobRunner
from .faults import FaultPolicy
from .heartbeats import Heartbeat
from .protocol import ClaimProtocol
from .waits import QueueWaits, StopCut

#: Seconds a stop waits for RQ's scheduler process before killing it.
SCHEDULER_STOP_SECONDS = 2.0


class RQWorkerBase(WorkerInternals, SimpleWorker):
    """RQ's worker methods, over the collaborators :class:`~.worker.FastWorker` builds."""

    #: The key names of the namespace this worker serves.
    keys: Keys = KEYS
    #: Seconds without a master before the worker exits; ``None`` means ``WORKER_MASTER_TIMEOUT``.
    master_timeout: float | None = None
    faults: FaultPolicy
    heartbeats: Heartbeat
    protocol: ClaimProtocol
    runner: JobRunner
    commands: CommandListener
    waits: QueueWaits
    stop_cut: StopCut
    _scheduler_stopping: bool

    @property
    def dequeue_timeout(self) -> int:
        """Block on the master for at most half the master timeout (RQ: the worker TTL - 15 s).

        A master that stops answering without closing the connection (stopped, partitioned)
        then shows up as a socket timeout well within ``WORKER_MASTER_TIMEOUT``.
        """
        return max(1, min(self.worker_ttl - 15, int(float(self.master_timeout or 60) / 2)))

    def queue_for(self, name: str) -> Queue:
        """The queue called ``name``, with this worker's connection, classes and serializer."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        return self.queue_class(
            name, connection=self.connection, job_class=self.job_class, serializer=self.serializer
        )

    # -- RQ's worker, through the fault policy --------------------------------------------------

    def register_birth(self) -> None:
        """Wait for a master at start-up instead of crashing."""
        self.faults.call(super().register_birth)

    def subscribe(self) -> None:
        """Listen to ``rq``'s commands once a master answers."""
        self.faults.call(self.commands.start)
        # RQ's names for the subscription and its thread, which its tools and tests look at.
        self.pubsub = self.commands.pubsub
        self.pubsub_thread = self.commands.thread

    def unsubscribe(self) -> None:
        """Stop listening, waiting at most about a second."""
        self.commands.stop()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """A state write outside a pipeline waits for a master instead of ending the worker."""
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        self.faults.call(super().set_state, state)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """A heartbeat outside a pipeline waits for a master instead of ending the work loop."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        self.faults.call(super().heartbeat, timeout)

    def check_for_suspension(self, burst: bool) -> None:
        """Like RQ's, without a worker heartbeat (the heartbeat thread keeps the worker alive)."""
        before_state = None
        notified = False
        while not self.stop_requested and is_suspended(self.connection):
            if burst:
                self.log.info("Worker %s: suspended in burst mode, exiting", self.name)
                raise StopRequested
            if not notified:
                self.log.info("Worker %s: suspended, run `rq resume` to resume", self.name)
                before_state = self.get_state()
                self.set_state(WorkerStatus.SUSPENDED)
                notified = True
            time.sleep(1)
        if before_state:
            self.set_state(before_state)

    def run_maintenance_tasks(self) -> None:
        """Registry clean-up; after a lost master it runs again next time."""
        try:
            super().run_maintenance_tasks()
        except UNAVAILABLE_ERRORS as exc:
            self.faults.wait_for_master(exc)
        except OutOfMemoryError as exc:
            self.log.warning("Worker %s: registry clean-up put off, Redis is full: %s", self.name, exc)

    # -- commands and stops ---------------------------------------------------------------------

    def handle_payload(self, message: Any) -> None:
        """Commands from ``rq`` (listener thread); ``kill-horse`` fails the running job, as RQ's does."""
        payload = parse_payload(message)
        if payload.get("command") != "kill-horse":
            super().handle_payload(message)
            return
        self.log.info("Received kill horse command.")
        if self.runner.kill():
            self.log.info("Killing horse...")
        elif self.runner.running:
            self.log.warning("Jobs run on threads (WORKER_CONCURRENCY > 1): kill horse command ignored")
        else:
            self.log.info("Worker is not working, kill horse command ignored")

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Stop the running job (there is no horse): raise :class:`JobStopped` inside it."""
        self.runner.stop()

    def stop_scheduler(self) -> None:
        """Ask RQ's scheduler process to stop (SIGTERM); :meth:`teardown` waits for it, bounded.

        RQ calls this from its signal handler too, while a job runs: it must not block there.
        """
        process = scheduler_process(self)
        if process is None or not process.pid or self._scheduler_stopping:
            return
        self._scheduler_stopping = True
        try:
            os.kill(process.pid, signal.SIGTERM)
        except OSError:
            pass

    def _shutdown(self) -> None:
        """The warm-stop step of RQ's signal handler (recorded first), then the wait under way cut.

        That ends a wait for work that began after the loop last looked at the request, even
        when the handler's ``StopRequested`` was dropped (:class:`~.waits.StopCut`).
        """
        try:
            super()._shutdown()
        finally:
            stop_cut = getattr(self, "stop_cut", None)
            if stop_cut is not None:
                stop_cut.cut()

    def teardown(self) -> None:
        """Stop every thread and process with bounded waits; register the death if a master answers."""
        if self.scheduler:
            self._end_scheduler()
        self.waits.close()
        if self.protocol.unsure:
            # A stop cut a wait short whose claim may have run: put back what it took.
            try:
                self.faults.recover_phantom_claims()
            except (RedisError, OSError) as exc:
                self.log.warning("Worker %s: could not check its last claim: %s", self.name, exc)
        self.heartbeats.stop()
        try:
            super().register_death()
        except (RedisError, OSError) as exc:
            self.log.warning("Worker %s: could not register its death: %s", self.name, exc)
        self.commands.stop()

    def _end_scheduler(self) -> None:
        """End RQ's scheduler process at once, then release its locks from here.

        RQ's scheduler notices SIGTERM only after its one-second sleep, then writes its way
        out: on a busy machine that took 1 to 2.5 s of every stop. Its moves of due jobs are
        single transactions, so killing it loses none; the locks are released here, after the
        kill, so that it cannot take them again on its way down.
        """
        process = scheduler_process(self)
        if process is not None and process.pid:
            if process.is_alive():
                process.kill()
            process.join(SCHEDULER_STOP_SECONDS)
        scheduler = self.scheduler
        if scheduler is None:
            return
        try:
            scheduler.release_locks()
            scheduler.register_death()
        except (RedisError, OSError) as exc:
            self.log.warning("Worker %s: could not release the scheduler's locks: %s", self.name, exc)
