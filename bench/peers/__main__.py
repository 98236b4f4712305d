"""``python -m bench.peers``: the peers table alone, on a private Redis (``make bench`` runs it too)."""

from __future__ import annotations

import argparse

from bench.common import private_redis, redis_version
from bench.peers import suite, table
from bench.peers.catalog import DEFAULT, PEERS


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose regimes and peers (shared with ``bench.run``)."""
    regimes = ",".join(suite.REGIMES)
    parser.add_argument("--regimes", type=_names, help=f"comma-separated: {regimes} (default: all)")
    parser.add_argument(
        "--peers",
        type=_names,
        help=f"comma-separated: {','.join(PEERS)}, or all (default: {','.join(DEFAULT)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")


def choose(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The regimes and peers ``args`` name (a ``SystemExit`` for an unknown name)."""
    regimes = suite.select(args.regimes, suite.REGIMES, "regimes", list(suite.REGIMES))
    return regimes, suite.select(args.peers, PEERS, "peers", DEFAULT)


def run(redis_url: str, args: argparse.Namespace, scale: float) -> list[str]:
    """Measure the peers that ``args`` choose; the report's lines."""
    regimes, peers = choose(args)
    results = suite.measure(redis_url, regimes, peers, args.rounds, scale)
    return table.report(results, redis_version())


def main() -> None:
    """Print the peers table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply job counts")
    add_arguments(parser)
    args = parser.parse_args()
    with private_redis() as url:
        for line in run(url, args, args.scale):
            print(line)


if __name__ == "__main__":
    main()
