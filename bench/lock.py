"""Acquire+release pairs per second: this lock on 1 and 3 nodes, redis-py ``Lock``, ``pottery.Redlock``.

Run with ``flock /tmp/bench.lock .venv/bin/python -m bench.lock`` (needs the ``bench`` extra).
Everything is measured in one run against private ``redis-server`` nodes started here. The
rounds are interleaved so that load from other processes hits every contender alike; the best
round of each is reported. The Node ``redlock`` figure is a fixed reference, not measured here.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import redis

from shared.lock import Redlock
from shared.stack.binaries import NO_SERVER, find_server
from shared.stack.local import PrivateRedis

NODE_REDLOCK_3_NODES = 2149.0  # pairs/s of the Node `redlock` library on 3 nodes (reference figure)


def rate(pair: Callable[[], None], seconds: float) -> float:
    """Acquire+release pairs per second, done back to back for ``seconds``."""
    for _ in range(50):
        pair()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            pair()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def contended(
    take: Callable[[], Callable[[], object]], threads: int, seconds: float, hold: float
) -> tuple[float, list[float]]:
    """Threads taking the same lock, holding it ``hold`` s, then as long outside: (acquisitions/s, waits)."""
    stop = time.perf_counter() + seconds
    waits: list[float] = []
    mutex = threading.Lock()

    def work() -> None:
        while time.perf_counter() < stop:
            asked = time.perf_counter()
            release = take()
            waited = time.perf_counter() - asked
            time.sleep(hold)
            release()
            with mutex:
                waits.append(waited)
            time.sleep(hold)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(waits) / (time.perf_counter() - start), sorted(waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    found = find_server()
    if found is None:
        raise SystemExit(NO_SERVER)
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as scratch:
        nodes = [PrivateRedis(found.path, Path(scratch) / f"node{i}") for i in range(3)]
        try:
            for node in nodes:
                node.start()
            run(nodes, args.seconds, args.rounds)
        finally:
            for node in nodes:
                node.stop()


def run(nodes: list[PrivateRedis], seconds: float, rounds: int) -> None:
    from pottery import Redlock as PotteryRedlock

    urls = [node.url for node in nodes]
    clients = [redis.Redis.from_url(url) for url in urls]
    ours1, ours3 = Redlock(urls[:1]), Redlock(urls)
    pottery1 = PotteryRedlock(key="bench-p1", masters={clients[0]}, auto_release_time=10)
    pottery3 = PotteryRedlock(key="bench-p3", masters=set(clients), auto_release_time=10)

    def redis_py_pair() -> None:
        lock = clients[0].lock("bench-rp", timeout=10)
        lock.acquire()
        lock.release()

    def pottery_pair(lock: PotteryRedlock) -> Callable[[], None]:
        def pair() -> None:
            lock.acquire()
            lock.release()

        return pair

    def ours_pair(lock: Redlock, name: str) -> Callable[[], None]:
        def pair() -> None:
            lock.acquire(name, timeout=0).release()

        return pair

    contenders: dict[str, Callable[[], None]] = {
        "ours, 1 node": ours_pair(ours1, "bench-o1"),
        "ours, 3 nodes": ours_pair(ours3, "bench-o3"),
        "redis-py Lock, 1 node": redis_py_pair,
        "pottery Redlock, 1 node": pottery_pair(pottery1),
        "pottery Redlock, 3 nodes": pottery_pair(pottery3),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for number in range(rounds):
        for name, pair in contenders.items():
            results[name].append(rate(pair, seconds))
        figures = ", ".join(f"{n} {v[-1]:,.0f}" for n, v in results.items())
        print(f"round {number + 1}: {figures}", flush=True)
    best = {name: max(values) for name, values in results.items()}
    print()
    print(f"uncontended acquire+release pairs/s, best of {rounds} rounds of {seconds:g}s:")
    for name, value in best.items():
        print(f"  {name:<28}{value:>10,.0f}")
    print(f"  {'Node redlock, 3 nodes (ref)':<28}{NODE_REDLOCK_3_NODES:>10,.0f}")
    print("ratios:")
    o1, o3 = best["ours, 1 node"], best["ours, 3 nodes"]
    rp, p3 = best["redis-py Lock, 1 node"], best["pottery Redlock, 3 nodes"]
    print(f"  ours 1 node / redis-py Lock 1 node      {o1 / rp:.2f}x")
    print(f"  ours 3 nodes / pottery 3 nodes          {o3 / p3:.2f}x")
    print(f"  ours 3 nodes / Node redlock (reference) {o3 / NODE_REDLOCK_3_NODES:.2f}x")
    print(f"  ours 3 nodes / redis-py Lock 1 node     {o3 / rp:.2f}x")

    def take_ours() -> Callable[[], object]:
        return ours3.acquire("bench-c", timeout=None).release

    def take_redis_py() -> Callable[[], object]:
        lock = clients[0].lock("bench-crp", timeout=10)
        lock.acquire()  # redis-py polls every 0.1 s while the lock is held
        return lock.release

    def take_pottery() -> Callable[[], object]:
        lock = PotteryRedlock(key="bench-cp", masters=set(clients), auto_release_time=10)
        lock.acquire()
        return lock.release

    print()
    print("contended: 4 threads, each holding the lock 2 ms per turn, then 2 ms outside it:")
    for name, take in (
        ("ours, 3 nodes", take_ours),
        ("redis-py Lock, 1 node", take_redis_py),
        ("pottery Redlock, 3 nodes", take_pottery),
    ):
        per_second, waits = contended(take, 4, seconds, 0.002)
        p50, p99 = (1000 * waits[min(len(waits) - 1, int(q * len(waits)))] for q in (0.5, 0.99))
        mean = 1000 * statistics.fmean(waits)
        print(
            f"  {name:<28}{per_second:>8,.0f} acquisitions/s; wait mean {mean:,.1f} ms,"
            f" p50 {p50:,.1f} ms, p99 {p99:,.1f} ms"
        )
    ours1.close()
    ours3.close()
    for client in clients:
        client.close()


if __name__ == "__main__":
    main()
