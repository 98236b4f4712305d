"""The regimes, and the rounds: every chosen peer in every chosen regime, interleaved.

Each round runs the regimes in order and, within a regime, the peers in an order rotated by one
per round, so that no peer always runs first or last while the machine's load drifts. A peer that
fails to install is left out (and said so); a run that fails is recorded as an error, and the
rest go on.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from redis import Redis

from bench.peers import runner, table
from bench.peers.catalog import PEERS, Peer
from bench.peers.envs import EnvError
from bench.peers.proxy import delay_proxy
from bench.peers.runner import Outcome, Regime

REGIMES: dict[str, Regime] = {
    regime.key: regime
    for regime in [
        Regime("noop", "(a) no-op jobs, concurrency 1", "noop", jobs=2000, concurrency=1, cap=10),
        Regime("io", "(b) 10 ms I/O jobs, concurrency 10", "io", jobs=2000, concurrency=10, cap=8),
        Regime(
            "remote",
            "(c) no-op jobs, concurrency 1, Redis ~1 ms away (delay proxy)",
            "noop",
            jobs=500,
            concurrency=1,
            delay_ms=0.5,
            cap=8,
        ),  # fmt: skip
        Regime(
            "latency",
            "(d) idle worker: enqueue return to job start",
            "noop",
            jobs=300,
            concurrency=1,
            interval=0.02,
            cap=4,
        ),  # fmt: skip
    ]
}

Key = tuple[str, str]


@dataclass
class Results:
    """Everything one ``measure`` saw: outcomes and errors per (regime, peer), and timings."""

    regimes: list[Regime]
    peers: list[Peer]
    rounds: int
    outcomes: dict[Key, list[Outcome]] = field(default_factory=dict)
    errors: dict[Key, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: Wall seconds per regime key, and "install".
    seconds: dict[str, float] = field(default_factory=dict)
    #: PING round trip (ms, median of 200): straight to Redis, and through the delay proxy.
    ping_ms: tuple[float, float] | None = None


def select(names: list[str] | None, known: Mapping[str, object], what: str, default: list[str]) -> list[str]:
    """Validate a ``--peers``/``--regimes`` list (``None``: ``default``; ``all``: everything)."""
    if not names:
        return default
    if names == ["all"]:
        return list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def measure(
    redis_url: str,
    regime_keys: list[str],
    peer_keys: list[str],
    rounds: int = 3,
    scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Run ``rounds`` interleaved rounds; ours always takes part (the ratios need it)."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if "ours" not in peer_keys:
        peer_keys = ["ours", *peer_keys]
    regimes = [REGIMES[key].scaled(scale) for key in regime_keys]
    results = Results(regimes, [], rounds)
    started = time.monotonic()
    for key in peer_keys:
        peer = PEERS[key]
        try:
            if peer.ensure():
                say(f"installed {peer.label()}")
            results.versions[key] = peer.version()
            results.peers.append(peer)
        except (EnvError, OSError, subprocess.SubprocessError) as exc:
            results.missing[key] = str(exc).splitlines()[0][:200]
            say(f"{peer.name} left out: {results.missing[key]}")
    results.seconds["install"] = time.monotonic() - started
    if any(regime.delay_ms for regime in regimes):
        results.ping_ms = _ping(redis_url, max(regime.delay_ms for regime in regimes))
    for round_index in range(rounds):
        shift = round_index % max(1, len(results.peers))
        order = results.peers[shift:] + results.peers[:shift]
        for regime in regimes:
            regime_started = time.monotonic()
            for peer in order:
                if peer.single and regime.concurrency > 1:
                    continue
                _one(results, peer, regime, redis_url, f"round {round_index + 1}/{rounds}", say)
            results.seconds[regime.key] = (
                results.seconds.get(regime.key, 0.0) + time.monotonic() - regime_started
            )
    return results


def _one(
    results: Results, peer: Peer, regime: Regime, url: str, where: str, say: Callable[[str], None]
) -> None:
    key = (regime.key, peer.key)
    try:
        outcome = runner.run(peer, regime, url)
    except (runner.RunError, OSError, subprocess.SubprocessError) as exc:
        results.errors.setdefault(key, []).append(str(exc))
        say(f"{where} {regime.key} {peer.key}: error: {str(exc).splitlines()[0][:200]}")
        return
    results.outcomes.setdefault(key, []).append(outcome)
    partial = "" if outcome.complete else f" ({outcome.done} of {outcome.expected} within the cap)"
    say(f"{where} {regime.key} {peer.key}: {table.shown(outcome)}{partial} [{outcome.seconds:.1f} s]")


def _ping(redis_url: str, delay_ms: float) -> tuple[float, float]:
    """Median PING round trips straight to Redis and through a delay proxy, in ms."""

    def median_ping(url: str) -> float:
        client = Redis.from_url(url)
        client.ping()
        times = []
        for _ in range(200):
            start = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - start)
        client.close()
        return statistics.median(times) * 1000

    with delay_proxy(redis_url, delay_ms) as proxied:
        return median_ping(redis_url), median_ping(proxied)
