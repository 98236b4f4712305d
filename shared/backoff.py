"""The one backoff: delays that double from a first one to a cap, optionally jittered, within a limit.

Every wait for something to come back uses it: the producer's enqueue retries, the ride-out
client of plain rq workers, the fast worker's waits for a master or for memory, and the database
retry of jobs (whole seconds, as RQ's ``Retry`` intervals are).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """A policy: ``first`` seconds, doubling up to ``cap``; ``jitter`` takes up to that share off."""

    first: float
    cap: float
    jitter: float = 0.0

    def delay(self, tries: int) -> float:
        """The pause after ``tries`` failed tries (``tries`` >= 1; the first pause is ``first``)."""
        base = min(self.cap, self.first * 2.0 ** min(max(tries - 1, 0), 32))
        if self.jitter:
            base -= base * self.jitter * random.random()
        return base

    def start(self, limit: float | None = None) -> Waits:
        """The waits of one stretch of failures, bounded by ``limit`` seconds if given."""
        return Waits(self, limit)


@dataclass
class Waits:
    """One stretch of failures under a :class:`Backoff`: how long it lasted, what to wait next."""

    policy: Backoff
    limit: float | None = None
    started: float = field(default_factory=time.monotonic)
    tries: int = 0

    @property
    def waited(self) -> float:
        """Seconds since the stretch began."""
        return time.monotonic() - self.started

    @property
    def expired(self) -> bool:
        """Whether the stretch has lasted its limit."""
        return self.limit is not None and self.waited >= self.limit

    def next_delay(self) -> float:
        """Count a failed try; the pause before the next one (never past the limit)."""
        self.tries += 1
        delay = self.policy.delay(self.tries)
        if self.limit is not None:
            delay = min(delay, max(0.0, self.limit - self.waited))
        return delay

    def sleep(self) -> float:
        """Count a failed try and pause before the next one; returns the pause."""
        delay = self.next_delay()
        time.sleep(delay)
        return delay
