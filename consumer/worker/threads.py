"""Job threads for ``WORKER_CONCURRENCY`` > 1: N jobs at once, for jobs that wait on I/O.

The main thread claims one job for every free thread in one round trip and hands them over;
a thread that ends a job leaves its success writes for the main thread, which sends them with
its next claim, so that a busy worker spends about one round trip per claim, not two per job.
While the main thread blocks waiting for work, threads write their own successes instead
(:meth:`JobThreads.writing_their_own`), so no success waits for new work to arrive.

The threads are daemons: a cold stop (a second signal) ends the process without waiting for
them, as RQ's cold shut down kills the horse.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .faults import REDIS_FAULTS
from .protocol import Pending, Started

if TYPE_CHECKING:
    from .worker import FastWorker


class JobThreads:
    """``count`` daemon threads running ``worker``'s claimed jobs, ``lookahead`` more waiting for one."""

    def __init__(self, worker: FastWorker, count: int, lookahead: int = 0) -> None:
        self.worker = worker
        self.count = count
        #: Jobs held at most: running, and claimed ahead so that a thread never waits for a claim.
        self.capacity = count + lookahead
        self._jobs: queue.SimpleQueue[Started | None] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._busy = 0
        self._finished: list[Pending] = []
        self._own_writes = False
        self._threads = [
            threading.Thread(target=self._run, name=f"job-{worker.name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        """Jobs handed over and not ended: running, writing their success, or waiting for a thread."""
        return self._busy

    @property
    def free(self) -> int:
        """Jobs to claim now: room below :attr:`capacity`."""
        return self.capacity - self._busy

    def start(self, started: Started) -> None:
        """Run a claimed job on a free thread."""
        with self._changed:
            self._busy += 1
        self._jobs.put(started)

    def finished(self) -> list[Pending]:
        """The success writes of the jobs that ended since the last call."""
        with self._changed:
            out, self._finished = self._finished, []
        return out

    def wait(self, timeout: float) -> None:
        """Block until a job ends (or ``timeout`` passes)."""
        with self._changed:
            if not self._finished and self._busy:
                self._changed.wait(timeout)

    def wait_all(self) -> None:
        """Block until no job runs (a warm stop); each job's own timeout bounds the wait."""
        with self._changed:
            while self._busy:
                self._changed.wait(1.0)

    @contextlib.contextmanager
    def writing_their_own(self) -> Iterator[bool]:
        """While the main thread blocks, threads write their own successes.

        Yields ``False`` (do not block) when some already wait for the main thread.
        """
        with self._changed:
            if self._finished:
                yield False
                return
            self._own_writes = True
        try:
            yield True
        finally:
            with self._changed:
                self._own_writes = False

    def withdraw(self) -> list[Started]:
        """Take back the jobs no thread has started yet (a stop puts them back in their queues)."""
        taken: list[Started] = []
        while True:
            try:
                started = self._jobs.get_nowait()
            except queue.Empty:
                break
            if started is None:  # a close came first: leave it for a thread
                self._jobs.put(None)
                break
            taken.append(started)
        with self._changed:
            self._busy -= len(taken)
            self._changed.notify_all()
        return taken

    def close(self) -> None:
        """Tell the threads to exit once idle; nobody waits for them (daemons)."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        worker = self.worker
        while True:
            started = self._jobs.get()
            if started is None:
                return
            job, job_queue, execution = started
            pending: Pending | None = None
            try:
                pending = worker.runner.run(job, job_queue, execution)
            except REDIS_FAULTS as exc:
                worker.faults.cut_off(job, exc)
            except Exception:
                worker.log.exception("Worker %s: job %s crashed its thread", worker.name, job.id)
            with self._changed:
                write_now = pending is not None and self._own_writes
                if pending is not None and not write_now:
                    self._finished.append(pending)
            if write_now and pending is not None:
                try:
                    worker.protocol.flush([pending])
                except REDIS_FAULTS as exc:
                    worker.faults.cut_off(job, exc)
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()
