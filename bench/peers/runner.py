"""One measurement: one peer, one regime, on a flushed private Redis (through the delay proxy if asked).

Throughput regimes fill the queue with the peer's own producer, then start its worker, and rate
the jobs from the first one's start to the last one's end (the jobs' own stamps). The latency
regime starts the worker first; the producer warms it up, then trickles one job every interval
and records when each enqueue call returned. A run that has not finished within its cap is cut
there: its rate then covers the jobs that ran, and the table marks it.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from bench.peers.catalog import ROOT, Peer
from bench.peers.proxy import delay_proxy
from bench.peers.stamps import Stamps, count_lines, latencies, percentile, read_returns
from shared.stack import procs

#: Warm-up jobs the latency regime's producer sends first (negative indices, not measured).
WARMUP = 3


@dataclass(frozen=True)
class Regime:
    """A workload: what jobs, how many, at what concurrency, how far away Redis is."""

    key: str
    title: str
    kind: str
    jobs: int
    concurrency: int
    #: Added by the proxy in each direction (0: straight to Redis).
    delay_ms: float = 0.0
    #: Seconds between enqueues (the latency regime); ``None`` fills the queue first.
    interval: float | None = None
    #: Seconds the jobs may take once the worker is started (after the trickle, for latency).
    cap: float = 15.0

    @property
    def latency(self) -> bool:
        return self.interval is not None

    def scaled(self, scale: float) -> Regime:
        """The same regime with ``scale`` times the jobs (at least 20)."""
        return Regime(**{**self.__dict__, "jobs": max(20, int(self.jobs * scale))})


@dataclass(frozen=True)
class Outcome:
    """What one run measured."""

    done: int
    expected: int
    seconds: float
    #: Jobs per second (throughput regimes).
    rate: float | None = None
    #: Seconds from the enqueue call's return to the job's start (latency regime).
    p50: float | None = None
    p99: float | None = None

    @property
    def complete(self) -> bool:
        return self.done >= self.expected


class RunError(RuntimeError):
    """A run failed (a producer or worker exited, nothing ran)."""


def run(peer: Peer, regime: Regime, redis_url: str) -> Outcome:
    """Measure ``peer`` in ``regime`` against the Redis at ``redis_url`` (flushed first)."""
    started = time.monotonic()
    conn = Redis.from_url(redis_url)
    conn.flushall()
    conn.close()
    proxied = delay_proxy(redis_url, regime.delay_ms) if regime.delay_ms else nullcontext(redis_url)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp, proxied as url:
        stamps = Path(tmp) / "stamps"
        env = peer.environ(url, stamps, regime.concurrency)
        log = Path(tmp) / "worker.log"
        if regime.latency:
            with _worker(peer, regime, env, log) as worker:
                returns = Path(tmp) / "returns"
                assert regime.interval is not None
                trickle = peer.trickle(regime.kind, regime.jobs, regime.interval, WARMUP, returns)
                _produce(trickle, env, 90 + regime.jobs * regime.interval)
                _wait(stamps, regime.jobs + WARMUP, regime.cap, worker, log)
            found = Stamps.read(stamps)
            lags = latencies(found, read_returns(returns))
            if not lags:
                raise RunError(f"{peer.key}: no job of the trickle ran\n{_tail(log)}")
            return Outcome(
                len(lags), regime.jobs, time.monotonic() - started,
                p50=percentile(lags, 0.5), p99=percentile(lags, 0.99),
            )  # fmt: skip
        _produce(peer.fill(regime.kind, regime.jobs), env, 300)
        with _worker(peer, regime, env, log) as worker:
            _wait(stamps, regime.jobs, regime.cap, worker, log)
        found = Stamps.read(stamps)
        rate = found.rate()
        if rate is None:
            raise RunError(f"{peer.key}: fewer than two jobs ran within {regime.cap:.0f} s\n{_tail(log)}")
        return Outcome(len(found.measured()), regime.jobs, time.monotonic() - started, rate=rate)


def _produce(argv: list[str], env: dict[str, str], timeout: float) -> None:
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RunError(f"producer {' '.join(argv[:6])} failed:\n{result.stderr[-1500:]}")


@contextmanager
def _worker(peer: Peer, regime: Regime, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The peer's worker, logging to ``log``; killed (its whole process group) on exit."""
    with open(log, "wb") as out:
        proc = procs.spawn(peer.worker(regime.concurrency), env=env, stdout=out, stderr=out, cwd=str(ROOT))
    try:
        yield proc
    finally:
        # The measurement is over: no peer's graceful shutdown is part of it.
        procs.stop(proc, timeout=10, sig=signal.SIGKILL)


def _wait(stamps: Path, count: int, cap: float, worker: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``count`` stamps are in, ``cap`` seconds pass, or the worker exits (an error)."""
    deadline = time.monotonic() + cap
    while count_lines(stamps) < count and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RunError(f"the worker exited with {worker.returncode}\n{_tail(log)}")
        time.sleep(0.02)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return ""
