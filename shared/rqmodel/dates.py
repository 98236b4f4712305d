"""RQ's timestamps and job ids, produced and parsed without the standard library's slow paths."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from rq.utils import utcparse


def format_date(moment: datetime) -> str:
    """RQ's ``utcformat`` (``%Y-%m-%dT%H:%M:%S.%fZ``) without ``strftime``'s cost."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_date(raw: bytes) -> datetime:
    """RQ's timestamp format (``2026-01-02T03:04:05.678901Z``), parsed as RQ's ``utcparse`` does."""
    try:
        return datetime.fromisoformat(raw.decode()).astimezone(UTC)
    except ValueError:
        return utcparse(raw.decode())


def utc_now() -> datetime:
    """The current time, timezone-aware, as RQ keeps it."""
    return datetime.now(UTC)


class Stamp:
    """RQ's ``utcformat(now())`` (``2026-11-25T23:24:00.123456Z``), date part cached per second."""

    second = -1
    prefix = ""

    @classmethod
    def now(cls) -> bytes:
        """The current time in RQ's format, as bytes."""
        stamp = time.time()
        second = int(stamp)
        if second != cls.second:
            cls.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cls.second = second
        return f"{cls.prefix}.{int((stamp - second) * 1e6):06d}Z".encode()


def new_id() -> str:
    """A random UUID4 in RQ's form (``str(uuid4())``), formatted directly: a third of the cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def new_hex_id() -> str:
    """A random UUID4 in the form ``uuid4().hex`` (RQ's execution ids), formatted directly."""
    h = os.urandom(16).hex()
    return f"{h[:12]}4{h[13:16]}{_VARIANT[h[16]]}{h[17:]}"


#: The variant nibble of a UUID4 ("10xx" in binary) for each possible random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
