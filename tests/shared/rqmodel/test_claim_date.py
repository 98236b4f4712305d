"""The claim script stamps jobs with the server's clock, in RQ's date format, computed in Lua."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import redis

from shared.rqmodel.scripts import CLAIM

# The script's own rq_date function, called with chosen moments instead of the server's TIME.
_DATE_ONLY = CLAIM.source.split("local time = redis.call('TIME')")[0] + (
    "\nreturn rq_date(tonumber(ARGV[1]), tonumber(ARGV[2]))"
)


def _moments() -> list[datetime]:
    edges = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2100, 3, 1, 0, 0, 0, 500000, tzinfo=UTC),
    ]
    rng = random.Random(7)
    start = datetime(1990, 1, 1, tzinfo=UTC)
    return edges + [
        start + timedelta(seconds=rng.randrange(0, 4 * 10**9), microseconds=rng.randrange(10**6))
        for _ in range(300)
    ]


def test_the_claim_scripts_dates_are_rqs_format(r: redis.Redis) -> None:
    for moment in _moments():
        seconds = int(moment.timestamp())
        stamp = r.eval(_DATE_ONLY, 0, seconds, moment.microsecond)
        assert stamp.decode() == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), moment
