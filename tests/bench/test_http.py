"""The HTTP benchmark's pure parts: wrk's output, the ceiling's argv, the rows."""

from __future__ import annotations

import pytest

from bench.http import ceiling_argv, parse_wrk, rows_of
from shared.stack.local import producer_argv

WRK_OUT = """Running 10s test @ http://127.0.0.1:4000/queue/members
  2 threads and 16 connections
  Latency Distribution
     50%    2.10ms
     75%    3.00ms
     90%    4.50ms
     99%  850.00us
  70000 requests in 10.00s, 9.00MB read
Requests/sec:   7000.50
Transfer/sec:      0.90MB
"""


def test_parse_wrk_reads_rate_and_p99_in_ms() -> None:
    assert parse_wrk("u", WRK_OUT) == (7000.50, pytest.approx(0.85))
    assert parse_wrk("u", WRK_OUT.replace("850.00us", "1.50s"))[1] == pytest.approx(1500.0)


def test_parse_wrk_refuses_a_run_with_error_answers() -> None:
    with pytest.raises(RuntimeError, match="12 error responses"):
        parse_wrk("u", WRK_OUT + "  Non-2xx or 3xx responses: 12\n")


def test_the_ceiling_runs_under_ours_granian_argv() -> None:
    ours, ceiling = producer_argv("127.0.0.1", 4000), ceiling_argv("127.0.0.1", 4000)
    assert ceiling[:-1] == ours[:-1]
    assert ceiling[-1] == "bench.ceiling_app:create_app"


def test_rows_compare_ours_with_each_other_server_and_show_the_share_of_the_ceiling() -> None:
    medians = {"ours": (7000.0, 4.0), "baseline": (1000.0, 30.0), "ceiling": (14000.0, 2.0)}
    rows = rows_of(medians)
    assert len(rows) == 2
    assert "7,000 req/s, p99 4 ms" in rows[0] and "1,000 req/s" in rows[0] and "| 7.0x |" in rows[0]
    assert "Flask ceiling" in rows[1] and "| 0.50x |" in rows[1] and "ours / ceiling: 50%" in rows[1]
    with_node = rows_of({**medians, "express": (3500.0, 9.0)})
    assert len(with_node) == 3 and "Express + Bull" in with_node[1] and "| 2.0x |" in with_node[1]


def test_the_ceiling_app_parses_the_body_and_answers_202() -> None:
    from bench.ceiling_app import JOB_ID, create_app

    client = create_app().test_client()
    answer = client.post("/queue/members", json={"name": "Bench", "age": 30})
    assert answer.status_code == 202 and answer.get_json() == {"jobId": JOB_ID}
    assert client.post("/queue/members", data="{", content_type="application/json").status_code == 400
