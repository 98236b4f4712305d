"""Tiny runs of the peers harness with the contenders the project's own lock installs: ours and RQ."""

from __future__ import annotations

import dataclasses

import pytest

from bench.peers import runner
from bench.peers.catalog import PEERS
from bench.peers.runner import Regime

NOOP = Regime("noop", "(a) no-op jobs, concurrency 1", "noop", jobs=60, concurrency=1, cap=30)


def test_ours_no_op_jobs_give_a_rate(redis_url: str) -> None:
    outcome = runner.run(PEERS["ours"], NOOP, redis_url)
    assert outcome.complete
    assert outcome.done == 60
    assert outcome.rate is not None and outcome.rate > 0
    assert outcome.p50 is None


def test_ours_behind_the_proxy_waits_a_round_trip_per_job(redis_url: str) -> None:
    remote = Regime("remote", "(c)", "noop", jobs=40, concurrency=1, delay_ms=0.5, cap=30)
    outcome = runner.run(PEERS["ours"], remote, redis_url)
    assert outcome.complete
    # One job at a time, each needing at least one round trip of >= 1 ms: at most 1,000 a second.
    assert outcome.rate is not None and 0 < outcome.rate < 1000


def test_ours_ten_millisecond_jobs_overlap_on_threads(redis_url: str) -> None:
    io = Regime("io", "(b)", "io", jobs=100, concurrency=10, cap=30)
    outcome = runner.run(PEERS["ours"], io, redis_url)
    assert outcome.complete
    # One at a time would be at most 100 a second.
    assert outcome.rate is not None and outcome.rate > 150


@pytest.mark.slow
def test_latency_of_ours_and_stock_rq(redis_url: str) -> None:
    latency = Regime("latency", "(d)", "noop", jobs=25, concurrency=1, interval=0.02, cap=20)
    for key in ("ours", "rq"):
        outcome = runner.run(PEERS[key], latency, redis_url)
        assert outcome.done == 25, key
        assert outcome.p50 is not None and outcome.p99 is not None
        assert -0.005 < outcome.p50 <= outcome.p99 < 1.0, key


@pytest.mark.slow
def test_stock_rq_no_op_jobs(redis_url: str) -> None:
    outcome = runner.run(PEERS["rq"], NOOP, redis_url)
    assert outcome.done == 60
    assert outcome.rate is not None and outcome.rate > 0


def test_a_worker_that_cannot_start_is_an_error(redis_url: str) -> None:
    broken = dataclasses.replace(PEERS["ours"], command=("python", "-c", "raise SystemExit(3)"))
    with pytest.raises(runner.RunError, match="exited with 3"):
        runner.run(broken, NOOP, redis_url)
