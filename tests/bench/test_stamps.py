"""Stamps: what jobs write, and the rates and latencies read from them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bench.peers import stamps
from bench.peers.stamps import STAMPS_ENV, Stamps, count_lines, latencies, percentile, read_returns


def test_jobs_on_threads_write_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stamps"
    monkeypatch.setenv(STAMPS_ENV, str(path))
    monkeypatch.setattr(stamps, "_fds", {})

    def work(first: int) -> None:
        for index in range(first, first + 200):
            stamps.stamp(index, 1000.0 + index)

    threads = [threading.Thread(target=work, args=(first,)) for first in range(0, 1000, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.close(stamps._fds.pop(os.getpid()))
    found = Stamps.read(path)
    assert count_lines(path) == 1000
    assert sorted(found.jobs) == list(range(1000))
    assert all(start == 1000.0 + index and end >= start for index, (start, end) in found.jobs.items())


def test_the_rate_runs_from_the_first_start_to_the_last_end() -> None:
    found = Stamps({-1: (0.0, 0.5), 0: (10.0, 10.1), 1: (10.5, 10.6), 2: (11.9, 12.0)})
    assert found.measured() == {0: (10.0, 10.1), 1: (10.5, 10.6), 2: (11.9, 12.0)}
    assert found.rate() == pytest.approx(3 / 2.0)
    assert Stamps({0: (1.0, 2.0)}).rate() is None


def test_latency_is_start_minus_the_enqueue_return(tmp_path: Path) -> None:
    returns = tmp_path / "returns"
    returns.write_text("0 100.000000\n1 100.020000\n2 100.040000\n")
    found = Stamps({0: (100.001, 100.002), 1: (100.0205, 100.021)})
    lags = latencies(found, read_returns(returns))
    assert lags == pytest.approx([0.0005, 0.001])


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
