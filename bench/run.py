"""``make bench``: every benchmark on one private redis-server, ours beside its baseline.

Run it under ``flock /tmp/bench.lock`` (``make bench`` does) so that no two benchmarks share
the machine. ``--scale 0.2`` gives a quick, noisier run.
"""

from __future__ import annotations

import argparse

from bench import enqueue, http, worker
from bench.common import HEADER, machine, private_redis, today


def main() -> None:
    """Print the table of every benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts")
    parser.add_argument("--seconds", type=int, default=10, help="length of each HTTP run")
    parser.add_argument("--only", choices=["worker", "enqueue", "http"], action="append")
    args = parser.parse_args()
    parts = args.only or ["worker", "enqueue", "http"]
    print(f"{today()}, {machine()}")
    print()
    print(HEADER)
    with private_redis() as url:
        if "worker" in parts:
            for line in worker.measure(url, args.scale):
                print(line, flush=True)
        if "enqueue" in parts:
            for line in enqueue.measure(url, args.scale):
                print(line, flush=True)
        if "http" in parts:
            for line in http.measure(url, args.seconds):
                print(line, flush=True)


if __name__ == "__main__":
    main()
