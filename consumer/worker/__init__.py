"""``FastWorker``: an RQ worker with RQ's data model and a fraction of its per-job cost.

``rq worker -c consumer.settings -S json -w consumer.worker.FastWorker member``

What it keeps: queues, job hashes, executions, the started/finished/failed/scheduled
registries, result streams, retries, callbacks, timeouts, worker hashes and commands, so
``rq info``, the dashboard and RQ's maintenance see what they see with RQ's own worker classes.

What it changes (docs/worker.md):

- one round trip claims jobs (pop, read the hash, mark it started, register the execution:
  a Lua script) and the same round trip writes the successes of the jobs run since the last
  claim (result, registries, worker stats: another script);
- jobs run in the worker process (no fork per job, like ``SimpleWorker``); with
  ``WORKER_CONCURRENCY`` > 1 they run on that many threads, for I/O-bound jobs;
- liveness: a background thread beats every few seconds; any worker (and the monitor in
  :mod:`consumer.recovery`) re-queues the jobs of a worker whose beat stopped, within
  ``HEARTBEAT_TIMEOUT`` seconds, instead of RQ's job timeout plus maintenance interval;
- a lost Redis master (failover), a read-only replica or a full Redis is waited for, bounded
  by ``WORKER_MASTER_TIMEOUT`` (:mod:`.faults`); stops are honoured within a second or two.

Failures, retries, ``Retry`` results, jobs with dependents, ``result_ttl=0``, repeats and
rate-limited jobs take RQ's own code paths unchanged.

The loop is :class:`.worker.FastWorker` (RQ's worker methods it overrides: :mod:`.base`);
what it holds: :mod:`.protocol` (claim and finish), :mod:`.execution` (running a job,
timeouts, stops), :mod:`.threads` (job threads), :mod:`.faults` (the fault policy),
:mod:`.heartbeats` (liveness), :mod:`.commands` (``rq``'s commands), :mod:`.waits` (waiting on
several queues). Everything it knows about RQ's storage is in :mod:`shared.rqmodel`.
"""

from consumer.worker.execution import JobStopped, WorkHorseKilled
from consumer.worker.faults import EXIT_NO_MASTER
from consumer.worker.worker import FastWorker

__all__ = ["EXIT_NO_MASTER", "FastWorker", "JobStopped", "WorkHorseKilled"]
