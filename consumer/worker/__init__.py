"""``FastWorker``: an RQ worker with RQ's data model and a fraction of its per-job cost.

``rq worker -c consumer.settings -S json -w consumer.worker.FastWorker member``

What it keeps: queues, job hashes, executions, the started/finished/failed/scheduled
registries, result streams, retries, callbacks, timeouts, worker hashes and commands, so
``rq info``, the dashboard and RQ's maintenance see what they see with a stock worker.

What it changes (README, "Performance"):

- one round trip claims a job (pop, read the hash, mark it started, register the execution:
  a Lua script) and one finishes it (result, registries, worker stats: another script); the
  finish of a job travels in the same pipeline as the claim of the next one;
- jobs run in the worker process (no fork per job, like ``SimpleWorker``); with
  ``WORKER_CONCURRENCY`` > 1 they run on that many threads, for I/O-bound jobs;
- liveness: a background thread beats every few seconds; any worker (and the monitor in
  :mod:`consumer.recovery`) re-queues the jobs of a worker whose beat stopped, within
  ``HEARTBEAT_TIMEOUT`` seconds, instead of RQ's job timeout plus maintenance interval;
- the suspension flag is read at most once a second, not once per job; the worker hash's
  ``state`` stays ``busy`` while jobs keep coming; per-job log lines are at DEBUG;
- a lost Redis master (failover) is waited for, bounded by ``WORKER_MASTER_TIMEOUT``
  (:class:`consumer.failover.FailoverMixin`, mixed in front of :class:`FastWorkerBase`).

Failures, retries, ``Retry`` results, jobs with dependents, ``result_ttl=0``, repeats and
rate-limited jobs take RQ's own code paths unchanged.

The package follows the worker's seams: :mod:`.loop` (the work loop, batches, threads,
waiting), :mod:`.protocol` (claim and finish), :mod:`.execution` (running a job, timeouts,
stops), :mod:`.heartbeats` (liveness and recovery of dead workers). Everything it knows about
RQ's storage is in :mod:`shared.rqmodel`.
"""

from consumer.failover import FailoverMixin
from consumer.worker.execution import JobStopped, WorkHorseKilled
from consumer.worker.loop import FastWorkerBase


class FastWorker(FailoverMixin, FastWorkerBase):
    """:class:`FastWorkerBase` that rides out a Redis failover (the default worker class)."""


__all__ = ["FastWorker", "FastWorkerBase", "JobStopped", "WorkHorseKilled"]
