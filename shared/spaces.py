"""A namespace as one process reaches it: its key names and the client of the Redis that holds them.

Standalone or with Sentinel the queue's Redis is one namespace, under RQ's prefix. On a Redis
Cluster a queue spreads over several namespaces (:mod:`shared.cluster.namespaces`), each
reached through a client pinned to its slot, and the project's global figures live in a home
slot of their own. The producer writes each job to one namespace; the figures of ``/metrics``
and the dashboard are summed over namespaces (:mod:`shared.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from rq.job import Job

from shared.keys import Keys
from shared.rqmodel.classes import job_class


# eq=False: a space is the one the process built (hashed by identity, cheaply, as a dict key).
@dataclass(frozen=True, eq=False)
class Space:
    """One namespace: its key names and its client."""

    keys: Keys
    client: Redis

    @property
    def job_class(self) -> type[Job]:
        """RQ's ``Job`` bound to this namespace's keys."""
        return job_class(self.keys)
