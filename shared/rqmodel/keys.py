"""Every Redis key name of RQ's data model, built from one prefix.

RQ 3 builds its keys from ``rq.defaults.RQ_KEY_PREFIX`` (``rq`` unless the ``RQ_KEY_PREFIX``
environment variable says otherwise before rq is imported; ``{rq}`` pins every key to one
Redis Cluster slot). :class:`RQKeys` builds the same names for any prefix, so the producer
and the fast worker write the keys RQ's own classes read (``tests/shared/rqmodel`` compares
them with RQ's own classes). The project's own keys (heartbeats, counters, the lock's, the
cache's) are in :mod:`shared.keys`, whose :class:`~shared.keys.Keys` adds them to these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rq.defaults import RQ_KEY_PREFIX


@dataclass(frozen=True)
class RQKeys:
    """Key names of RQ's data model under ``rq_prefix``."""

    rq_prefix: str = RQ_KEY_PREFIX

    #: RQ's prefix with its separator (``rq:``), which every RQ key starts with.
    rq: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rq", self.rq_prefix + ":")

    # -- jobs ---------------------------------------------------------------------------------

    @property
    def job_prefix(self) -> str:
        """``rq:job:``: a job hash is this plus the job id."""
        return self.rq + "job:"

    def job(self, job_id: str) -> str:
        """The job hash."""
        return f"{self.rq}job:{job_id}"

    def dependents(self, job_id: str) -> str:
        """The set of jobs waiting for this one."""
        return f"{self.rq}job:{job_id}:dependents"

    def dependencies(self, job_id: str) -> str:
        """The set of jobs this one waits for.

        RQ 3.0 writes it with two colons (``Job.dependencies_key``), and so must we.
        """
        return f"{self.rq}job::{job_id}:dependencies"

    def results(self, job_id: str) -> str:
        """The job's result stream."""
        return f"{self.rq}results:{job_id}"

    def execution(self, job_id: str, execution_id: str) -> str:
        """One execution (run) of a job."""
        return f"{self.rq}execution:{job_id}:{execution_id}"

    def executions(self, job_id: str) -> str:
        """The sorted set of a job's executions."""
        return f"{self.rq}executions:{job_id}"

    # -- queues and registries ----------------------------------------------------------------

    @property
    def queue_prefix(self) -> str:
        """``rq:queue:``: a queue's list is this plus the queue name."""
        return self.rq + "queue:"

    def queue(self, name: str) -> str:
        """The queue's list of job ids."""
        return f"{self.rq}queue:{name}"

    def queue_name(self, queue_key: str) -> str:
        """The name of the queue whose list is ``queue_key``."""
        return queue_key[len(self.queue_prefix) :]

    @property
    def queues(self) -> str:
        """The set of every queue's key."""
        return self.rq + "queues"

    def started(self, queue: str) -> str:
        """The started registry (``<job id>:<execution id>`` scored by expiry)."""
        return f"{self.rq}wip:{queue}"

    def finished(self, queue: str) -> str:
        """The finished registry."""
        return f"{self.rq}finished:{queue}"

    def failed(self, queue: str) -> str:
        """The failed registry."""
        return f"{self.rq}failed:{queue}"

    def scheduled(self, queue: str) -> str:
        """The scheduled registry (retries with intervals, ``enqueue_at``)."""
        return f"{self.rq}scheduled:{queue}"

    def deferred(self, queue: str) -> str:
        """The deferred registry (jobs waiting for dependencies)."""
        return f"{self.rq}deferred:{queue}"

    def canceled(self, queue: str) -> str:
        """The canceled registry."""
        return f"{self.rq}canceled:{queue}"

    # -- workers ------------------------------------------------------------------------------

    def worker(self, name: str) -> str:
        """The worker hash."""
        return f"{self.rq}worker:{name}"

    def worker_executions(self, name: str) -> str:
        """The set of the worker's executions (``<job id>:<execution id>``)."""
        return f"{self.rq}worker:{name}:executions"

    @property
    def workers(self) -> str:
        """The set of every worker's key."""
        return self.rq + "workers"

    def workers_of(self, queue: str) -> str:
        """The set of the keys of the workers listening on ``queue``."""
        return f"{self.rq}workers:{queue}"


#: RQ's keys of this process, under its configured prefix.
RQ_KEYS = RQKeys()


def parse_member(member: bytes | str) -> tuple[str, str]:
    """(job id, execution id) of a started-registry or worker-executions member."""
    text = member.decode() if isinstance(member, bytes) else member
    job_id, _, execution_id = text.partition(":")
    return job_id, execution_id
