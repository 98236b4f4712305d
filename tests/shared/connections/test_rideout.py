"""RideOutRetry: RQ's client waits out an outage for a bounded time, then gives up with the reason."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

from consumer.worker import FastWorker
from shared.connections import (
    RedisGaveUpError,
    RideOutRetry,
    close_redis,
    get_redis,
    give_url_options,
    rq_client_options,
)
from shared.settings import Settings
from shared.stack.procs import free_port, wait_until
from shared.stack.sentinel import HaCluster
from tests.servers import REDIS_SERVER, RedisProc


def _failing(errors: list[Exception]) -> tuple[list[int], object]:
    calls = [0]

    def do() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return calls, do


@pytest.mark.parametrize(
    "error",
    [RedisConnectionError("refused"), ReadOnlyError("READONLY"), OutOfMemoryError("OOM"), TimeoutError()],
)
def test_outage_errors_are_tried_again_until_they_stop(error: Exception) -> None:
    retry = RideOutRetry(5)
    if isinstance(error, TimeoutError):
        error = redis.exceptions.TimeoutError("timed out")
    calls, do = _failing([error, error, error])
    failures: list[Exception] = []
    assert retry.call_with_retry(do, failures.append) == "ok"  # type: ignore[arg-type]
    assert calls[0] == 4 and len(failures) == 3


def test_other_errors_are_not_retried() -> None:
    calls, do = _failing([ResponseError("WRONGTYPE")])
    with pytest.raises(ResponseError):
        RideOutRetry(5).call_with_retry(do, lambda error: None)  # type: ignore[arg-type]
    assert calls[0] == 1


def test_it_gives_up_after_the_horizon_and_then_fails_at_once_until_redis_answers() -> None:
    retry = RideOutRetry(0.3)
    started = time.monotonic()
    calls, do = _failing([RedisConnectionError("refused")] * 1000)
    with pytest.raises(RedisGaveUpError, match=r"longer than WORKER_MASTER_TIMEOUT=0.3s.*refused"):
        retry.call_with_retry(do, lambda error: None)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 2
    assert not isinstance(RedisGaveUpError("x"), RedisConnectionError)  # RQ's loop must not retry it
    # The process is giving up: its last calls (registering death) do not wait a second horizon.
    started = time.monotonic()
    with pytest.raises(RedisGaveUpError, match="gave up after"):
        retry.call_with_retry(do, lambda error: None)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.1
    # Once a call gets through, a later outage gets the whole horizon again.
    calls, do = _failing([])
    assert retry.call_with_retry(do, lambda error: None) == "ok"  # type: ignore[arg-type]
    calls, do = _failing([RedisConnectionError("refused")] * 3)
    assert retry.call_with_retry(do, lambda error: None) == "ok"  # type: ignore[arg-type]


def test_every_copy_is_the_same_policy() -> None:
    retry = RideOutRetry(5)
    assert copy.deepcopy(retry) is retry
    client = redis.Redis(port=free_port(), retry=retry)
    connection = client.connection_pool.make_connection()
    assert connection.retry is retry


def test_a_client_of_a_dead_server_waits_for_the_horizon_then_gives_up() -> None:
    client = redis.Redis(port=free_port(), retry=RideOutRetry(0.5), socket_connect_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(RedisGaveUpError):
        client.ping()
    assert 0.5 <= time.monotonic() - started < 3
    client.close()


def test_rqs_url_client_gets_the_options_and_nobody_else(redis_proc: RedisProc) -> None:
    # The URL RQ is handed (one no other test uses: the registration lasts for the process).
    url = f"redis://localhost:{redis_proc.port}/9"
    options = rq_client_options(Settings(redis_url=url, worker_master_timeout=7))
    give_url_options(url, options)
    rq_client = redis.Redis.from_url(url)
    assert isinstance(rq_client.connection_pool.connection_kwargs["retry"], RideOutRetry)
    assert rq_client.connection_pool.connection_kwargs["retry"].horizon == 7
    own = redis.Redis.from_url(url, retry=Retry(redis.backoff.NoBackoff(), 0))
    assert not isinstance(own.connection_pool.connection_kwargs["retry"], RideOutRetry)
    other = redis.Redis.from_url(url.replace("/9", "/8"))
    assert not isinstance(other.connection_pool.connection_kwargs.get("retry"), RideOutRetry)
    assert rq_client.ping()
    for client in (rq_client, own, other):
        client.close()


def test_fast_workers_take_the_quick_policy_back(r: redis.Redis, redis_proc: RedisProc) -> None:
    client = redis.Redis(port=redis_proc.port, retry=RideOutRetry(60))
    client.ping()  # a pooled connection exists already
    worker = FastWorker([Queue("member", connection=client, serializer=JSONSerializer)], connection=client)
    pool = worker.connection.connection_pool
    assert not isinstance(pool.connection_kwargs["retry"], RideOutRetry)
    assert all(not isinstance(c.retry, RideOutRetry) for c in pool._available_connections)
    client.close()


def test_a_command_cut_off_by_a_failover_lands_on_the_new_master(tmp_path: Path) -> None:
    """A blocking pop on the master when it dies: retried on the same connection, it must ask
    the Sentinels again rather than knock on the dead address until the horizon."""
    cluster = HaCluster(REDIS_SERVER, tmp_path / "redis", down_after_ms=1000)
    cluster.start()
    settings = Settings.from_env(cluster.env())
    client = get_redis(settings, retry=RideOutRetry(30), socket_timeout=30)
    admin = get_redis(settings, retry=RideOutRetry(30))
    popped: list[object] = []
    try:
        assert client.ping()
        waiter = threading.Thread(target=lambda: popped.append(client.blpop(["archive:test:handoff"], 25)))
        waiter.start()
        assert wait_until(lambda: admin.client_list(_type="normal") and _blocked(admin), 10)
        old = cluster.kill_master()
        cluster.wait_for_new_master(old)
        # The old node comes back as a replica: a retry on the old address would now get READONLY.
        cluster.start_node(old, replica_of=cluster.master())
        assert wait_until(lambda: _blocked(admin), 15), "the pop did not block again on the new master"
        admin.rpush("archive:test:handoff", "after the failover")
        waiter.join(20)
    finally:
        close_redis(client)
        close_redis(admin)
        cluster.stop()
    assert popped == [(b"archive:test:handoff", b"after the failover")]


def _blocked(admin: redis.Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in admin.client_list(_type="normal"))
