"""The worker's command listener: messages reach the handler; a stop never waits on a read."""

from __future__ import annotations

import time

import redis

from consumer.worker.commands import POLL, CommandListener
from shared.stack.procs import wait_until


def test_messages_reach_the_handler_and_a_stop_returns_at_once(r: redis.Redis) -> None:
    seen: list[bytes] = []
    listener = CommandListener(r, "rq:pubsub:w1", lambda message: seen.append(message["data"]), "w1")
    listener.start()
    try:
        assert wait_until(lambda: r.pubsub_numsub("rq:pubsub:w1")[0][1] == 1, 5)
        r.publish("rq:pubsub:w1", b'{"command": "shutdown"}')
        assert wait_until(lambda: seen == [b'{"command": "shutdown"}'], 5)
    finally:
        started = time.monotonic()
        listener.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 0.2
    # The thread ends by itself within one read and closes the subscription.
    assert wait_until(lambda: r.pubsub_numsub("rq:pubsub:w1")[0][1] == 0, POLL * 4)
    assert not listener.listening


def test_a_stop_right_after_the_start_does_not_wait_for_the_subscription(r: redis.Redis) -> None:
    for i in range(20):
        listener = CommandListener(r, f"rq:pubsub:quick{i}", lambda message: None, f"quick{i}")
        listener.start()
        started = time.monotonic()
        listener.stop()
        assert time.monotonic() - started < 0.2
    assert wait_until(
        lambda: all(n == 0 for _, n in r.pubsub_numsub(*[f"rq:pubsub:quick{i}" for i in range(20)])), 5
    )
