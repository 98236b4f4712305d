"""HTTP enqueue: ``POST /queue/members`` under wrk, the producer against stock Flask+RQ.

Ours: ``redis-archive serve``'s set-up (granian, one process per CPU of 3 threads, keep-alive). Baseline:
``bench.baseline_app`` (plain Flask view, ``Queue.enqueue``) under gunicorn with two sync
workers. Where node and npm are present, also Express + Bull v4 in one node process (the
NestJS producer this project replaces runs as one). The ceiling: ``bench.ceiling_app``, the same
POST answered by a bare Flask view under ours' granian argv, so "ours / ceiling" is the share of
what Flask under that server can do at all that the producer keeps. All enqueue into the same
private Redis; wrk runs 16 connections; the servers take turns in each round, each in a
session of its own (see ``_serve``).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from redis import Redis

from bench import bull
from bench.common import print_rows, row
from shared.stack import procs
from shared.stack.local import producer_argv

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "post.lua"


#: The row's ``what`` column.
WHAT = "HTTP `POST /queue/members`, wrk, 16 connections"


def ceiling_argv(host: str, port: int) -> list[str]:
    """``bench.ceiling_app`` under exactly the granian argv ``redis-archive serve`` runs the producer with."""
    *server, target = producer_argv(host, port)
    if target != "producer.server:served_app" or "--factory" not in server:
        raise RuntimeError(f"producer_argv no longer ends in a factory target: {target}")
    return [*server, "bench.ceiling_app:create_app"]


def _wrk(url: str, seconds: int, connections: int = 16) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) of a wrk run."""
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    return parse_wrk(url, result.stdout)


def parse_wrk(url: str, out: str) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) from wrk's ``--latency`` output; error answers raise."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses\n{out}")
    return rps, p99


def _serve(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own, as a deployed service runs apart from its clients.

    Linux's autogroup scheduler shares the CPU between sessions, then between the threads of
    one. With every server, Redis and wrk in the bench's session, each thread counts alike, so
    a server's share of the 2 cores against wrk and Redis followed its thread count: the
    producer (3 processes of 2 threads beside Redis) served 8,300 req/s there and 9,000 in a
    session of its own, the bare Flask view 17,700 and 16,600, Express + Bull and gunicorn the
    same in both.
    """
    proc = procs.spawn(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT), session=True
    )
    if not procs.wait_until(lambda: procs.port_open("127.0.0.1", port), 30):
        procs.stop(proc)
        raise RuntimeError(f"{argv} did not start")
    return proc


def measure(redis_url: str, seconds: int = 10, rounds: int = 3) -> list[str]:
    """The HTTP rows of the benchmark table: medians of ``rounds`` interleaved wrk runs."""
    if shutil.which("wrk") is None:
        return [row("HTTP POST /queue/members", "(wrk missing: apt-get install wrk)", "")]
    conn = Redis.from_url(redis_url)
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "ceiling": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp, bull.bull() as modules:
        env = dict(
            os.environ, REDIS_URL=redis_url, DATABASE_URL=f"sqlite:///{tmp}/bench.db", LOG_LEVEL="WARNING"
        )
        env["PYTHONPATH"] = str(ROOT)
        ports = {name: procs.free_port() for name in results}
        baseline_argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{ports['baseline']}"]
        baseline_argv += [
            "--workers",
            "2",
            "--access-logfile",
            "/dev/null",
            "bench.baseline_app:create_app()",
        ]
        servers = [
            _serve(baseline_argv, env, ports["baseline"]),
            _serve(producer_argv("127.0.0.1", ports["ours"]), env, ports["ours"]),
            _serve(ceiling_argv("127.0.0.1", ports["ceiling"]), env, ports["ceiling"]),
        ]
        try:
            if modules is not None:
                ports["express"] = procs.free_port()
                results["express"] = []
                express = ["node", str(bull.EXPRESS), str(ports["express"]), redis_url]
                servers.append(_serve(express, bull.node_env(modules), ports["express"]))
            for port in ports.values():
                _wrk(f"http://127.0.0.1:{port}/queue/members", 2)  # warm-up
            for _ in range(rounds):
                for name, port in ports.items():
                    conn.flushall()
                    results[name].append(_wrk(f"http://127.0.0.1:{port}/queue/members", seconds))
        finally:
            for server in servers:
                procs.stop(server)
    conn.close()
    medians = {
        name: (statistics.median(rate for rate, _ in runs), statistics.median(p99 for _, p99 in runs))
        for name, runs in results.items()
    }
    return rows_of(medians)


def rows_of(medians: dict[str, tuple[float, float]]) -> list[str]:
    """The table rows from the medians (req/s, p99 ms) of each server, ``ours`` first."""
    ours, ours_p99 = medians["ours"]
    shown = f"{ours:,.0f} req/s, p99 {ours_p99:.0f} ms"
    others = {
        "baseline": "Flask + `Queue.enqueue`, gunicorn 2 sync workers",
        "express": "Express + Bull v4 `add`, one node process",
        "ceiling": "Flask ceiling: bare Flask view (`get_json`, 202), ours' granian settings",
    }
    rows = []
    for name, label in others.items():
        if name not in medians:
            continue
        rate, p99 = medians[name]
        note = f"ours / ceiling: {ours / rate:.0%}" if name == "ceiling" else ""
        rows.append(row(WHAT, shown, f"{rate:,.0f} req/s, p99 {p99:.0f} ms: {label}", ours / rate, note))
    return rows


def main() -> None:
    """Print the HTTP row."""
    print_rows(measure, __doc__, seconds=True)


if __name__ == "__main__":
    main()
