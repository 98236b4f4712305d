"""The delay proxy really delays, keeps every byte in order, and closes what its clients close."""

from __future__ import annotations

import statistics
import time

import redis

from bench.peers.proxy import delay_proxy


def _ping_ms(client: redis.Redis, times: int = 50) -> float:
    client.ping()
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        client.ping()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1000


def test_a_ping_through_the_proxy_takes_both_delays(redis_url: str, r: redis.Redis) -> None:
    with delay_proxy(redis_url, 0.5) as proxied:
        client = redis.Redis.from_url(proxied)
        through = _ping_ms(client)
        client.close()
    straight = _ping_ms(r)
    assert through >= 0.8, f"{through:.3f} ms through a 0.5 ms-each-way proxy"
    assert through < 10
    assert straight < through


def test_bytes_arrive_whole_and_in_order(redis_url: str, r: redis.Redis) -> None:
    with delay_proxy(redis_url, 0.5) as proxied:
        client = redis.Redis.from_url(proxied)
        blob = bytes(range(256)) * 4096  # 1 MiB: many chunks each way
        client.set("blob", blob)
        with client.pipeline(transaction=False) as pipe:
            for _ in range(500):
                pipe.incr("counter")
            replies = pipe.execute()
        assert client.get("blob") == blob
        client.close()
    assert replies == list(range(1, 501))
    assert r.get("counter") == b"500"


def test_a_client_that_leaves_closes_its_upstream(redis_url: str, r: redis.Redis) -> None:
    before = len(r.client_list())
    with delay_proxy(redis_url, 0.5) as proxied:
        client = redis.Redis.from_url(proxied)
        client.ping()
        assert len(r.client_list()) == before + 1
        client.close()
        deadline = time.monotonic() + 5
        while len(r.client_list()) > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(r.client_list()) == before
