"""RQ's ``Job`` and ``Result`` classes bound to a namespace other than the process's own prefix.

RQ builds its keys from one prefix per process; a producer that reads jobs of several
namespaces (a queue spread over a Redis Cluster) asks for the classes of each namespace.
"""

from __future__ import annotations

import functools
from typing import Any

from rq.defaults import RQ_KEY_PREFIX
from rq.job import Job
from rq.results import Result

from shared.rqmodel.keys import RQKeys


@functools.lru_cache(maxsize=64)
def job_class(keys: RQKeys) -> type[Job]:
    """``Job`` reading and writing under ``keys`` (RQ's own class for the process's prefix)."""
    if keys.rq_prefix == RQ_KEY_PREFIX:
        return Job

    class NamespaceResult(Result):
        @classmethod
        def get_key(cls, job_id: str) -> str:
            return keys.results(job_id)

    class NamespaceJob(Job):
        redis_job_namespace_prefix = keys.job_prefix

        def latest_result(self, timeout: int = 0) -> Result | None:
            return NamespaceResult.fetch_latest(self, serializer=self.serializer, timeout=timeout)

        def results(self) -> list[Any]:
            found: list[Any] = NamespaceResult.all(self, serializer=self.serializer)
            return found

    NamespaceJob.__qualname__ = f"Job[{keys.rq_prefix}]"
    return NamespaceJob
