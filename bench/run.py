"""``make bench``: every benchmark on one private redis-server, ours beside its baseline and its peers.

Run it under ``flock /tmp/bench.lock`` (``make bench`` does) so that no two benchmarks share
the machine. ``--scale 0.2`` gives a quick, noisier run. ``--regimes``/``--peers`` choose what
the peers table measures (``bench.peers``) and, without ``--only``, run that table alone.
"""

from __future__ import annotations

import argparse
import time

from bench import enqueue, http, worker
from bench.common import HEADER, machine, private_redis, today
from bench.peers import __main__ as peers

PARTS = ["worker", "enqueue", "http", "peers"]


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the parts they run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts")
    parser.add_argument("--seconds", type=int, default=10, help="length of each HTTP run")
    parser.add_argument("--only", choices=PARTS, action="append")
    peers.add_arguments(parser)
    args = parser.parse_args(argv)
    peers.choose(args)
    return args, args.only or (["peers"] if args.regimes or args.peers else PARTS)


def main() -> None:
    """Print the table of every benchmark, then the peers table, then what each part took."""
    args, parts = parse()
    print(f"{today()}, {machine()}")
    print()
    took: dict[str, float] = {}
    with private_redis() as url:
        if set(parts) - {"peers"}:
            print(HEADER)
        for part, rows in (
            ("worker", lambda: worker.measure(url, args.scale, args.rounds)),
            ("enqueue", lambda: enqueue.measure(url, args.scale, args.rounds)),
            ("http", lambda: http.measure(url, args.seconds, args.rounds)),
        ):
            if part in parts:
                started = time.monotonic()
                for line in rows():
                    print(line, flush=True)
                took[part] = time.monotonic() - started
        if "peers" in parts:
            started = time.monotonic()
            lines = peers.run(url, args, args.scale)
            took["peers"] = time.monotonic() - started
            if len(parts) > 1:
                print()
            print("Peers: each queue's own worker CLI with its defaults, one process (bench/peers)")
            print()
            for line in lines:
                print(line, flush=True)
    print()
    spent = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in took.items())
    print(f"Time: {spent}; total {sum(took.values()):.0f} s.")


if __name__ == "__main__":
    main()
