"""The seam's key names are RQ's own, under the default prefix and under RQ_KEY_PREFIX."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared.rqmodel.keys import RQKeys, parse_member

#: Prints RQ's key names and the seam's for one queue, job, execution and worker, as JSON.
_COMPARE = """
import json
import fakeredis
from rq import Queue, Worker
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job
from rq.registry import (CanceledJobRegistry, DeferredJobRegistry, FailedJobRegistry,
    FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry)
from rq.results import Result
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY
from shared.rqmodel.keys import RQ_KEYS as KEYS

r = fakeredis.FakeRedis()
q = Queue("member", connection=r)
job = Job.create("os.getpid", connection=r, id="j1")
execution = Execution("e1", "j1", connection=r)
worker = Worker([q], connection=r, name="w1")
rq = {
    "job": job.key.decode() if isinstance(job.key, bytes) else job.key,
    "dependents": job.dependents_key,
    "dependencies": job.dependencies_key,
    "results": Result.get_key("j1"),
    "execution": execution.key,
    "executions": ExecutionRegistry("j1", connection=r).key,
    "queue": q.key,
    "queues": Queue.redis_queues_keys,
    "started": StartedJobRegistry("member", connection=r).key,
    "finished": FinishedJobRegistry("member", connection=r).key,
    "failed": FailedJobRegistry("member", connection=r).key,
    "scheduled": ScheduledJobRegistry("member", connection=r).key,
    "deferred": DeferredJobRegistry("member", connection=r).key,
    "canceled": CanceledJobRegistry("member", connection=r).key,
    "worker": worker.key,
    "worker_executions": worker.executions_key,
    "workers": REDIS_WORKER_KEYS,
    "workers_of": WORKERS_BY_QUEUE_KEY % "member",
}
ours = {
    "job": KEYS.job("j1"),
    "dependents": KEYS.dependents("j1"),
    "dependencies": KEYS.dependencies("j1"),
    "results": KEYS.results("j1"),
    "execution": KEYS.execution("j1", "e1"),
    "executions": KEYS.executions("j1"),
    "queue": KEYS.queue("member"),
    "queues": KEYS.queues,
    "started": KEYS.started("member"),
    "finished": KEYS.finished("member"),
    "failed": KEYS.failed("member"),
    "scheduled": KEYS.scheduled("member"),
    "deferred": KEYS.deferred("member"),
    "canceled": KEYS.canceled("member"),
    "worker": KEYS.worker("w1"),
    "worker_executions": KEYS.worker_executions("w1"),
    "workers": KEYS.workers,
    "workers_of": KEYS.workers_of("member"),
}
print(json.dumps({"rq": rq, "ours": ours, "queue_name": KEYS.queue_name(q.key)}))
"""


@pytest.mark.parametrize("prefix", [None, "{rq}", "myapp", "app:v2"])
def test_every_key_is_the_one_rq_builds(prefix: str | None) -> None:
    # RQ reads RQ_KEY_PREFIX when it is imported: each prefix needs a process of its own.
    env = {k: v for k, v in os.environ.items() if k != "RQ_KEY_PREFIX"}
    if prefix is not None:
        env["RQ_KEY_PREFIX"] = prefix
    out = subprocess.run([sys.executable, "-c", _COMPARE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = json.loads(out.stdout)
    assert names["ours"] == names["rq"]
    expected = prefix or "rq"
    assert all(key.startswith(expected + ":") for key in names["ours"].values())
    assert names["queue_name"] == "member"


def test_a_namespace_builds_every_key_under_its_own_prefix() -> None:
    keys = RQKeys("{member-2}")
    assert keys.job("a") == "{member-2}:job:a"
    assert keys.started("member") == "{member-2}:wip:member"
    assert keys.queue_name(keys.queue("goods")) == "goods"


def test_members_of_executions_split_at_the_first_colon() -> None:
    assert parse_member(b"job-1:exec-2") == ("job-1", "exec-2")
    assert parse_member("job-1:") == ("job-1", "")
