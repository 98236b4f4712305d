"""The peers table: one row per peer and regime, medians, ranges, ratios, and the caveats."""

from __future__ import annotations

from bench.peers import table
from bench.peers.catalog import PEERS
from bench.peers.runner import Outcome
from bench.peers.suite import REGIMES, Results


def _rate(rate: float, done: int = 2000) -> Outcome:
    return Outcome(done=done, expected=2000, seconds=1.0, rate=rate)


def _latency(p50: float, p99: float) -> Outcome:
    return Outcome(done=300, expected=300, seconds=7.0, p50=p50, p99=p99)


def _results() -> Results:
    peers = [PEERS["ours"], PEERS["celery-solo"], PEERS["arq"]]
    results = Results([REGIMES["noop"], REGIMES["io"], REGIMES["latency"]], peers, rounds=3)
    results.versions = {"ours": "3.0.0", "celery-solo": "5.7.0", "arq": "0.28.0"}
    results.outcomes = {
        ("noop", "ours"): [_rate(3000), _rate(3300), _rate(2900)],
        ("noop", "celery-solo"): [_rate(1500), _rate(1400), _rate(1600)],
        ("noop", "arq"): [_rate(2.0, done=16), _rate(2.1, done=17), _rate(2.2, done=17)],
        ("io", "ours"): [_rate(950), _rate(960), _rate(970)],
        ("latency", "ours"): [_latency(0.0004, 0.004), _latency(0.0005, 0.005), _latency(0.0003, 0.003)],
        ("latency", "celery-solo"): [
            _latency(0.0006, 0.003),
            _latency(0.0007, 0.003),
            _latency(0.0008, 0.004),
        ],
    }
    results.errors = {("io", "arq"): ["the worker exited with 1\nTraceback ..."]}
    results.seconds = {"install": 1.0, "noop": 30.0}
    results.ping_ms = (0.04, 1.3)
    return results


def test_one_row_per_peer_and_regime() -> None:
    lines = table.render(_results())
    assert lines[0] == table.HEADER
    rows = lines[1:]
    assert len(rows) == 3 * 3
    assert all(row.count("|") == 6 for row in rows)
    first = "| (a) no-op jobs, concurrency 1, 2,000 jobs | redis-archive FastWorker (RQ 3.0.0) |"
    assert rows[0].startswith(first)
    assert rows[1].startswith("|  | Celery 5.7.0 --pool solo |")


def test_medians_ranges_and_ratios() -> None:
    rows = table.render(_results())[1:]
    assert rows[0].endswith("| 3,000/s | 2,900 to 3,300/s |  |")
    assert rows[1].endswith("| 1,500/s | 1,400 to 1,600/s | 2.0x |")
    assert rows[2].endswith("| 2.1/s (capped) | 2.0 to 2.2/s | 1,429x |")


def test_single_job_peers_sit_out_concurrency_and_errors_show() -> None:
    rows = table.render(_results())[1:]
    assert "| Celery 5.7.0 --pool solo | n/a: one job at a time |" in rows[4]
    assert "| arq 0.28.0 | error (1 of 1 rounds) |" in rows[5]


def test_latency_ratios_are_peer_over_ours() -> None:
    rows = table.render(_results())[1:]
    assert rows[6].endswith("| p50 0.40 ms, p99 4.00 ms | p50 0.30 to 0.50 ms; p99 3.00 to 5.00 ms |  |")
    assert rows[7].endswith("| p50 1.75x, p99 0.75x |")
    assert "| arq 0.28.0 | not run |" in rows[8]


def test_caveats_name_every_peer_and_the_proxy_round_trip() -> None:
    text = "\n".join(table.report(_results(), "7.0.15"))
    assert "1.30 ms through the proxy" in text
    assert "no result backend" in text
    for label in ("redis-archive FastWorker (RQ 3.0.0):", "Celery 5.7.0 --pool solo:", "arq 0.28.0:"):
        assert label in text
    assert "poll_delay" in text
    assert "arq in io failed 1x: the worker exited with 1" in text
    assert text.splitlines()[-1] == "Peers benchmark time: install 1 s, noop 30 s; total 31 s."


def test_ratio_digits() -> None:
    assert table.ratio(0.974) == "0.97x"
    assert table.ratio(3.64) == "3.6x"
    assert table.ratio(1547.2) == "1,547x"
    assert table.ms(0.00034) == "0.34 ms"
    assert table.ms(0.0155) == "15.5 ms"
    assert table.ms(2.2) == "2.2 s"
