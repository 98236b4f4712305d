"""shared.lock against three private redis-server nodes: quorum, validity, fencing, watchdog, wake-up."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.constants import LOCK_STATS_FIELDS
from shared.exceptions import LockLostError, LockTimeoutError, LockUnavailableError
from shared.keys import KEYS
from shared.lock import Lease, Redlock
from shared.lock.redlock import lock_keys
from shared.stack.procs import free_port
from tests.servers import RedisProc, redis_servers


@pytest.fixture
def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def redlock(lock_urls: list[str], r: redis.Redis) -> Iterator[Redlock]:
    lock = Redlock(lock_urls, stats=r, node_timeout=1.0)
    yield lock
    lock.close()


def stats(r: redis.Redis) -> dict[str, int]:
    raw = r.hgetall(KEYS.lock_stats)
    return {k.decode(): int(v) for k, v in raw.items()}


def test_acquire_is_exclusive_and_release_frees_it(redlock: Redlock, lock_nodes: list[RedisProc]) -> None:
    lease = redlock.acquire("a", ttl=5)
    for node in lock_nodes:
        client = node.client()
        assert client.get(lock_keys("a")[0]) == lease.token.encode()
        assert 4000 < client.pttl(lock_keys("a")[0]) <= 5000
        client.close()
    with pytest.raises(LockTimeoutError, match="still held"):
        redlock.acquire("a", timeout=0)
    assert lease.release() is True
    again = redlock.acquire("a", timeout=0)
    assert again.fence > lease.fence
    again.release()


def test_fences_grow_strictly_per_name(redlock: Redlock) -> None:
    fences = []
    for _ in range(20):
        with redlock.lock("f") as lease:
            fences.append(lease.fence)
    assert fences == sorted(set(fences))
    with redlock.lock("other") as lease:
        assert lease.fence == 1


def test_fence_stays_monotonic_when_majorities_differ(
    lock_urls: list[str], dead_url: str, lock_nodes: list[RedisProc]
) -> None:
    """Counters that disagree across nodes: a plain max over two different majorities would go back.

    Node a says 10, b and c say 1. A holder that sees {a, c} gets 11; one that later sees
    {b, c} would get max(2, 3) = 3 without the write-back of 11 to c; with it, 12.
    """
    a, b, c = (node.client() for node in lock_nodes)
    a.set(lock_keys("m")[1], 10)
    b.set(lock_keys("m")[1], 1)
    c.set(lock_keys("m")[1], 1)
    without_b = Redlock([lock_urls[0], dead_url, lock_urls[2]], node_timeout=0.2)
    without_a = Redlock([dead_url, lock_urls[1], lock_urls[2]], node_timeout=0.2)
    try:
        first = without_b.acquire("m", timeout=0)
        assert first.fence == 11
        assert int(c.get(lock_keys("m")[1]) or 0) == 11
        first.release()
        second = without_a.acquire("m", timeout=0)
        assert second.fence > first.fence
        second.release()
    finally:
        without_a.close()
        without_b.close()
        for client in (a, b, c):
            client.close()


def test_no_quorum_is_refused_at_once_with_a_clear_error(
    lock_urls: list[str], dead_url: str, r: redis.Redis
) -> None:
    other_dead = f"redis://127.0.0.1:{free_port()}/0"
    lock = Redlock([dead_url, other_dead, lock_urls[2]], stats=r, node_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(LockUnavailableError, match="only 1 of 3 Redis nodes answered, a majority of 2"):
            lock.acquire("q", timeout=30)
        assert time.monotonic() - started < 10
    finally:
        lock.close()
    assert stats(r)["failed"] == 1
    client = redis.Redis.from_url(lock_urls[2])
    assert client.get(lock_keys("q")[0]) is None  # the minority grant was undone
    client.close()


def test_one_node_down_still_locks(lock_urls: list[str], dead_url: str) -> None:
    lock = Redlock([lock_urls[0], lock_urls[1], dead_url], node_timeout=0.2)
    try:
        with lock.lock("d") as lease:
            assert lease.remaining() > 0
            with pytest.raises(LockTimeoutError):
                lock.acquire("d", timeout=0)
    finally:
        lock.close()


def test_expired_lease_is_reported_lost(redlock: Redlock, r: redis.Redis) -> None:
    lease = redlock.acquire("e", ttl=0.5)
    assert 0 < lease.remaining() <= 0.5
    time.sleep(0.7)
    with pytest.raises(LockLostError):
        lease.check()
    newer = redlock.acquire("e", timeout=0)
    assert lease.release() is False  # compare-and-delete left the new holder's key alone
    assert newer.remaining() > 0
    newer.release()
    assert stats(r) == {"acquired": 2, "lost": 1, "released": 1}


def test_watchdog_keeps_a_long_holder(redlock: Redlock, r: redis.Redis) -> None:
    with redlock.lock("w", ttl=1.0, auto_extend=True) as lease:
        time.sleep(1.5)
        assert not lease.lost
        lease.check()
        with pytest.raises(LockTimeoutError):
            redlock.acquire("w", timeout=0)
    counts = stats(r)
    assert counts["extended"] >= 2
    assert counts["released"] == 1
    assert "lost" not in counts


def test_watchdog_stops_and_tells_the_caller_when_the_lock_is_lost(
    redlock: Redlock, lock_nodes: list[RedisProc], r: redis.Redis
) -> None:
    told: list[Lease] = []
    with pytest.raises(LockLostError, match="was lost while held"):
        with redlock.lock("x", ttl=0.3, auto_extend=True, on_lost=told.append) as lease:
            for node in lock_nodes:  # as if the keys expired during a long stall
                client = node.client()
                client.delete(lock_keys("x")[0])
                client.close()
            assert lease.lost_event.wait(2)
            with pytest.raises(LockLostError):
                lease.check()
    assert told == [lease]
    assert stats(r)["lost"] == 1


def test_waiter_is_woken_by_the_release_not_by_polling(redlock: Redlock, lock_urls: list[str]) -> None:
    """The holder's TTL is 30 s; the waiter takes the lock right after the release, in few tries."""
    holder = redlock.acquire("h", ttl=30)
    waiter_lock = Redlock(lock_urls, node_timeout=0.2)
    attempts = 0
    original = waiter_lock._attempt

    def counting(*args: object) -> object:
        nonlocal attempts
        attempts += 1
        return original(*args)  # type: ignore[arg-type]

    waiter_lock._attempt = counting  # type: ignore[method-assign,assignment]
    got: list[tuple[float, Lease]] = []
    thread = threading.Thread(
        target=lambda: got.append((time.monotonic(), waiter_lock.acquire("h", timeout=25)))
    )
    try:
        thread.start()
        time.sleep(0.5)
        released_at = time.monotonic()
        holder.release()
        thread.join(25)
        assert got, "the waiter never got the lock"
        woke_at, lease = got[0]
        assert woke_at - released_at < 10  # far from the 30 s TTL: a notification woke it
        assert attempts <= 3
        assert lease.fence > holder.fence
        lease.release()
    finally:
        waiter_lock.close()


def test_threads_contending_never_overlap(redlock: Redlock, r: redis.Redis) -> None:
    r.set("counter", 0)
    inside = 0
    overlaps = 0

    def work() -> None:
        nonlocal inside, overlaps
        for _ in range(40):
            with redlock.lock("t", ttl=5, timeout=30):
                inside += 1
                overlaps += inside > 1
                value = int(r.get("counter") or 0)
                r.set("counter", value + 1)
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert int(r.get("counter") or 0) == 240
    assert overlaps == 0
    counts = stats(r)
    assert counts["acquired"] == counts["released"] == 240
    assert counts["contended"] > 0
    assert set(counts) <= set(LOCK_STATS_FIELDS)


def test_decorator_runs_the_function_under_the_lock(redlock: Redlock) -> None:
    @redlock.locked("dec", ttl=5)
    def critical(x: int) -> int:
        with pytest.raises(LockTimeoutError):
            redlock.acquire("dec", timeout=0)
        return x * 2

    assert critical(21) == 42
    redlock.acquire("dec", timeout=0).release()


def test_scripts_are_reloaded_after_a_script_flush(redlock: Redlock, lock_nodes: list[RedisProc]) -> None:
    redlock.acquire("s").release()
    for node in lock_nodes:
        client = node.client()
        client.script_flush()
        client.close()
    with redlock.lock("s") as lease:
        assert lease.fence == 2


def test_release_with_one_node_killed_counts_as_released(tmp_path: Path, r: redis.Redis) -> None:
    with redis_servers(tmp_path, 3) as servers:
        lock = Redlock([s.url for s in servers], stats=r, node_timeout=0.2)
        try:
            lease = lock.acquire("k")
            servers[1].kill()
            assert lease.release() is True
            with lock.lock("k") as again:
                assert again.fence > lease.fence
        finally:
            lock.close()
    assert stats(r)["released"] == 2


def test_lock_demo_cli_compares_with_and_without_the_lock(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shared.cli.main import main

    args = ["lock", "demo", "-p", "3", "-n", "40", "--stock", "100", "--think-ms", "1"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    locked, unlocked = report["with_lock"], report["without_lock"]
    assert (locked["successes"], locked["refused"], locked["final"]) == (100, 20, 0)
    assert locked["oversold"] == locked["lost_updates"] == 0
    assert unlocked["oversold"] + unlocked["lost_updates"] > 0
    small = ["lock", "demo", "-p", "2", "-n", "10", "--stock", "15", "--nodes", "1"]
    table = CliRunner().invoke(main, [*small, "--database-url", f"sqlite:///{tmp_path / 'd.db'}"])
    assert table.exit_code == 0, table.output
    assert "oversold" in table.output and "lost updates" in table.output and "with lock" in table.output


def test_lock_demo_cli_bad_database_is_a_clean_error() -> None:
    from click.testing import CliRunner

    from shared.cli.main import main

    result = CliRunner().invoke(main, ["lock", "demo", "-p", "1", "-n", "1", "--database-url", "nosuch://x"])
    assert result.exit_code != 0
    assert "Error: demo failed" in result.output
    result = CliRunner().invoke(main, ["lock", "demo", "--lock-url", "http://x"])
    assert result.exit_code != 0
    assert "Error: bad --lock-url" in result.output
