"""The peers table: per regime, ours and every peer, medians and ranges, ratios; then the caveats."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from bench.peers.runner import WARMUP, Outcome, Regime

if TYPE_CHECKING:
    from bench.peers.suite import Results

HEADER = "| regime | queue | median | range | ours vs it |\n|---|---|---|---|---|"


def ratio(value: float) -> str:
    """``1.29x``, ``3.6x``, ``1,155x``: two decimals near parity, where one would round 0.97 to 1.0."""
    if value < 2:
        return f"{value:.2f}x"
    return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def per_second(value: float) -> str:
    """A rate without its unit: ``2,310``, ``21.8``."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def ms(seconds: float) -> str:
    """A latency: ``0.34 ms``, ``12.5 ms``, ``2.7 s``."""
    value = seconds * 1000
    if abs(value) >= 1000:
        return f"{seconds:.1f} s"
    if abs(value) < 10:
        return f"{value:.2f} ms"
    return f"{value:.1f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def title(regime: Regime) -> str:
    """The regime's first cell: what it runs and how many jobs."""
    if regime.latency:
        every = f"{regime.interval * 1000:g} ms" if regime.interval else ""
        return f"{regime.title}, {regime.jobs:,} jobs, one every {every}"
    return f"{regime.title}, {regime.jobs:,} jobs"


def _rates(values: list[float]) -> tuple[str, str]:
    """Median and range of rates: ``2,310/s``, ``2,200 to 2,400/s``."""
    median = per_second(statistics.median(values))
    return f"{median}/s", f"{per_second(min(values))} to {per_second(max(values))}/s"


def _latencies(values: list[float]) -> tuple[str, str]:
    """Median and range of latencies: ``0.41 ms``, ``0.38 to 0.45 ms`` (``0.9 ms to 2.1 s``)."""
    low, high = ms(min(values)), ms(max(values))
    if low.split()[1] == high.split()[1]:
        low = low.split()[0]
    return ms(statistics.median(values)), f"{low} to {high}"


def render(results: Results) -> list[str]:
    """The table's lines, markdown."""
    lines = [HEADER]
    for regime in results.regimes:
        first = True
        for peer in results.peers:
            label = peer.name.format(v=results.versions.get(peer.key, "?"))
            cells = _cells(results, regime, peer.key, peer.single)
            lines.append(f"| {title(regime) if first else ''} | {label} | {' | '.join(cells)} |")
            first = False
    return lines


def _cells(results: Results, regime: Regime, peer: str, single: bool) -> list[str]:
    """median, range, ratio for one peer in one regime."""
    if single and regime.concurrency > 1:
        return ["n/a: one job at a time", "", ""]
    outcomes = results.outcomes.get((regime.key, peer), [])
    errors = results.errors.get((regime.key, peer), [])
    if not outcomes:
        return [f"error ({len(errors)} of {len(errors)} rounds)" if errors else "not run", "", ""]
    notes = []
    if any(not outcome.complete for outcome in outcomes):
        notes.append("capped")
    if errors:
        notes.append(f"{len(errors)} of {len(errors) + len(outcomes)} rounds failed")
    note = f" ({', '.join(notes)})" if notes else ""
    ours = results.outcomes.get((regime.key, "ours"), [])
    if regime.latency:
        p50 = [o.p50 for o in outcomes if o.p50 is not None]
        p99 = [o.p99 for o in outcomes if o.p99 is not None]
        (m50, r50), (m99, r99) = _latencies(p50), _latencies(p99)
        cells = [f"p50 {m50}, p99 {m99}{note}", f"p50 {r50}; p99 {r99}"]
        if peer == "ours" or not ours:
            return [*cells, ""]
        ours50 = statistics.median(o.p50 for o in ours if o.p50 is not None)
        ours99 = statistics.median(o.p99 for o in ours if o.p99 is not None)
        return [
            *cells,
            f"p50 {_ratio(statistics.median(p50), ours50)}, p99 {_ratio(statistics.median(p99), ours99)}",
        ]
    rates = [o.rate for o in outcomes if o.rate is not None]
    median, spread = _rates(rates)
    if peer == "ours" or not ours:
        return [f"{median}{note}", spread, ""]
    ours_rate = statistics.median(o.rate for o in ours if o.rate is not None)
    return [f"{median}{note}", spread, _ratio(ours_rate, statistics.median(rates))]


def _ratio(numerator: float, denominator: float) -> str:
    if denominator <= 0:
        return "n/a"
    return ratio(numerator / denominator)


def caveats(results: Results, redis_version: str) -> list[str]:
    """The caveats block: how the runs were made, and what each peer does per job by default."""
    ping = ""
    if results.ping_ms is not None:
        direct, proxied = results.ping_ms
        ping = f" (PING round trip: {direct:.2f} ms straight to Redis, {proxied:.2f} ms through the proxy)"
    fills = [f"{regime.key} {regime.cap:g} s" for regime in results.regimes if not regime.latency]
    trickles = [f"{regime.key} {regime.cap:g} s" for regime in results.regimes if regime.latency]
    caps = "; ".join(
        ([", ".join(fills) + " from the worker's start"] if fills else [])
        + ([", ".join(trickles) + " after the trickle"] if trickles else [])
    )
    lines = [
        "Caveats:",
        f"- Medians of {results.rounds} interleaved rounds (the peers' order rotated per round); range:"
        ' lowest to highest round. "ours vs it" is ours/peer for rates, peer/ours for latencies:'
        " above 1, ours is ahead.",
        f"- One private redis-server ({redis_version}, loopback, no persistence), flushed before each"
        " run; one worker process, started with its own CLI and its defaults but the concurrency."
        " In (a) to (c) the peer's own producer fills the queue before the worker starts; each job"
        " stamps its start and end (time.time(), one write(2) to a file, no Redis command), and"
        " jobs/s runs from the first job's start to the last job's end. \"capped\": in some round"
        f" not every job ran within the regime's cap ({caps}); that round's rate covers the jobs"
        " that did.",
        "- (c): every client of the run, producer and worker, reaches Redis through"
        f" bench/peers/proxy.py, which holds each chunk 0.5 ms in each direction{ping}.",
        f"- (d): the worker starts first and runs {WARMUP} warm-up jobs; then the producer enqueues"
        " one job at a time on a fixed schedule and notes when each enqueue call returned; latency"
        " is the job's own start stamp minus that (one clock). A worker that falls behind the"
        " trickle measures its backlog. A job can start before its enqueue call has returned"
        " (a negative latency): the worker's reply and the producer's leave Redis together.",
        "- (b): Celery --pool solo and RQ's SimpleWorker run one job at a time and sit out. Sync"
        " peers sleep with time.sleep(0.01) on threads (ours, Celery's threads pool, Dramatiq,"
        " huey); SAQ and arq await asyncio.sleep(0.01); node peers await a 10 ms setTimeout.",
        "- Concurrency 1: ours with its defaults, Celery's threads pool of 1, Dramatiq --processes 1"
        " --threads 1, huey --workers 1, SAQ concurrency 1, arq max_jobs 1, BullMQ/Bull"
        " concurrency 1.",
        "- Redis clients: ours parses with hiredis, and so does arq (its dependency); Celery (kombu),"
        " Dramatiq, huey and SAQ use redis-py's Python parser, as their packages install it; the"
        " node peers use ioredis.",
        "- Celery: no result backend (its default; none configured), so no result is stored.",
    ]
    for peer in results.peers:
        label = peer.name.format(v=results.versions.get(peer.key, "?"))
        lines.append(f"- {label}: stores {peer.stores}; waits: {peer.waits}.")
    for key, reason in results.missing.items():
        lines.append(f"- {key} left out: {reason}")
    for (regime, peer), errors in results.errors.items():
        lines.append(f"- {peer} in {regime} failed {len(errors)}x: {errors[0].splitlines()[0][:300]}")
    return lines


def timings(results: Results) -> str:
    """One line: the seconds each part of the peers benchmark took."""
    parts = [f"{key} {seconds:.0f} s" for key, seconds in results.seconds.items()]
    return f"Peers benchmark time: {', '.join(parts)}; total {sum(results.seconds.values()):.0f} s."


def shown(outcome: Outcome) -> str:
    """A run's figure, for progress lines."""
    if outcome.rate is not None:
        return f"{per_second(outcome.rate)}/s"
    return f"p50 {ms(outcome.p50 or 0)}, p99 {ms(outcome.p99 or 0)}"


def report(results: Results, redis_version: str) -> list[str]:
    """The table, a blank line, the caveats and the timings."""
    return [*render(results), "", *caveats(results, redis_version), "", timings(results)]
