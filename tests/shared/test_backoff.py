"""The one backoff: doubling delays, a cap, jitter, a limit."""

from __future__ import annotations

import time

from shared.backoff import Backoff


def test_delays_double_from_the_first_to_the_cap() -> None:
    policy = Backoff(first=0.05, cap=0.5)
    assert [policy.delay(n) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_jitter_takes_at_most_its_share_off() -> None:
    policy = Backoff(first=1.0, cap=1.0, jitter=0.2)
    delays = [policy.delay(1) for _ in range(200)]
    assert all(0.8 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1


def test_a_stretch_counts_tries_and_never_waits_past_its_limit() -> None:
    waits = Backoff(first=10.0, cap=10.0).start(limit=0.05)
    assert waits.next_delay() <= 0.05 and waits.tries == 1
    time.sleep(0.06)
    assert waits.expired
    assert waits.next_delay() == 0.0


def test_a_stretch_without_a_limit_never_expires() -> None:
    waits = Backoff(first=0.01, cap=0.02).start()
    assert not waits.expired
    assert [waits.next_delay() for _ in range(3)] == [0.01, 0.02, 0.02]
