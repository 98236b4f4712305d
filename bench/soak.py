"""The mixed-fault soak: member jobs over HTTP for a fixed time while faults hit every part.

``flock /tmp/bench.lock python -m bench.soak [--seconds 300] [--rate 20]``

Two lanes (``redis-archive up`` each: producer, a FastWorker, a plain ``rq worker``, the
monitor), one writing to a private PostgreSQL, one to a private MariaDB, share a Sentinel-managed
Redis (master, two replicas, three Sentinels, durable enqueue). While a client per lane POSTs
members, the schedule runs: worker SIGKILLs, the master SIGKILLed (failover), the master
restarted, PostgreSQL and MariaDB restarted, Redis full for a few seconds
(``tests/soak/``). Printed: requests, acknowledgements, refusals by reason, jobs
finished, rows, lost and duplicated members, fault to first finished job, processes alive.
Exit status 0 when nothing was lost or doubled and every process is alive.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, today  # noqa: E402
from tests.soak import SCHEDULE, SHORT_SCHEDULE, run_soak  # noqa: E402


def main() -> None:
    """Run the soak once and print its report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the load")
    parser.add_argument("--rate", type=float, default=20.0, help="POSTs per second per lane")
    parser.add_argument("--db-outage", type=float, default=10.0, help="seconds each database is down")
    parser.add_argument("--full-seconds", type=float, default=5.0, help="seconds Redis stays full")
    parser.add_argument(
        "--short",
        action="store_true",
        help="each kind of fault once (the test's schedule) instead of the full one",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = parser.parse_args()
    print(f"{today()}, {machine()}", flush=True)
    directory = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"logs in {directory}", flush=True)
    try:
        report = run_soak(
            directory,
            seconds=args.seconds,
            rate=args.rate,
            schedule=SHORT_SCHEDULE if args.short else SCHEDULE,
            db_outage=args.db_outage,
            full_seconds=args.full_seconds,
            say=lambda line: print(line, flush=True),
        )
        print()
        print(report.render(), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    sys.exit(0 if report.ok() else 1)


if __name__ == "__main__":
    main()
