"""``Job.restore`` for the jobs a worker claims, without RQ's per-field decoding overhead.

RQ's ``Job.restore`` decodes every field name of the hash and parses every date with
``strptime``; for a trivial job that is a fifth of the worker's Python time. :func:`restore`
sets the same attributes to the same values (``tests/consumer/test_worker.py`` compares it with RQ's
on jobs of every kind) for the fields RQ 3 writes, and hands anything else (results, exception
text, webhooks, fields it does not know) to RQ's own ``restore``.
"""

from __future__ import annotations

import json
import zlib

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import now

from shared.rqmodel.dates import parse_date

#: Fields this module restores itself.
KNOWN = frozenset(
    f.encode()
    for f in (
        "data created_at origin worker_name description enqueued_at started_at ended_at last_heartbeat"
        " group_id timeout result_ttl failure_ttl status success_callback_name success_callback_timeout"
        " failure_callback_name failure_callback_timeout stopped_callback_name stopped_callback_timeout"
        " dependency_ids dependency_id allow_dependency_failures enqueue_at_front ttl meta"
        " number_of_retries retries_left retry_intervals enqueue_at_front_on_retry repeats_left"
        " repeat_intervals rate_limit_key rate_limit_concurrency"
    ).split()
)

#: Fields left to RQ when they hold anything.
RARE = (b"result", b"exc_info", b"webhooks")


#: Job statuses by their stored value.
_STATUSES = {status.value.encode(): status for status in JobStatus}


class _Unusual(Exception):
    """A value this module does not parse the way RQ would: RQ's ``restore`` takes the job."""


def restore(job: Job, data: dict[bytes, bytes]) -> None:
    """``job.restore(data)`` for a hash as ``HGETALL`` returns it (bytes names and values)."""
    if data.keys() <= KNOWN:
        try:
            _restore(job, data)
            return
        except _Unusual:
            pass
    created = data.get(b"created_at")
    enqueued = data.get(b"enqueued_at")
    job.restore(data)
    # RQ's strptime and fromisoformat agree on RQ's format; keep the cheap parse's values.
    if created:
        job.created_at = parse_date(created)
    if enqueued:
        job.enqueued_at = parse_date(enqueued)


def _int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise _Unusual from None


def _restore(job: Job, data: dict[bytes, bytes]) -> None:
    get = data.get
    for rare in RARE:
        if get(rare):
            raise _Unusual
    try:
        raw = data[b"data"]
    except KeyError:
        raise NoSuchJobError(f"Unexpected job format: {data}") from None
    if raw[:1] == b"[":
        # A JSON payload stored as it is (writes.compress): no zlib header starts with "[".
        # Checked first: a failed zlib.decompress costs 0.7 us a job, the check 0.1 (timeit).
        job.data = raw
    else:
        try:
            job.data = zlib.decompress(raw)
        except zlib.error:
            job.data = raw
    job.created_at = parse_date(v) if (v := get(b"created_at")) else now()
    job.origin = v.decode() if (v := get(b"origin")) else ""
    job.worker_name = v.decode() if (v := get(b"worker_name")) else None
    job.description = v.decode() if (v := get(b"description")) else None
    job.enqueued_at = parse_date(v) if (v := get(b"enqueued_at")) else None
    job.started_at = parse_date(v) if (v := get(b"started_at")) else None
    job.ended_at = parse_date(v) if (v := get(b"ended_at")) else None
    job.last_heartbeat = parse_date(v) if (v := get(b"last_heartbeat")) else None
    job.group_id = v.decode() if (v := get(b"group_id")) else None
    job.timeout = _int(v) if (v := get(b"timeout")) else None
    job.result_ttl = _int(v) if (v := get(b"result_ttl")) else None
    job.failure_ttl = _int(v) if (v := get(b"failure_ttl")) else None
    job._status = (_STATUSES.get(v) or JobStatus(v.decode())) if (v := get(b"status")) else JobStatus.CREATED
    _callbacks(job, data)
    dep_ids, dep_id = get(b"dependency_ids"), get(b"dependency_id")
    job._dependency_ids = json.loads(dep_ids.decode()) if dep_ids else [dep_id.decode()] if dep_id else []
    allow = get(b"allow_dependency_failures")
    job.allow_dependency_failures = bool(_int(allow)) if allow else None
    front = data.get(b"enqueue_at_front")
    job.enqueue_at_front = bool(_int(front)) if front is not None else None
    job.ttl = _int(v) if (v := get(b"ttl")) else None
    job._unreadable_meta = None
    meta = get(b"meta")
    try:
        job.meta = job.serializer.loads(meta) if meta else {}
    except Exception:  # depends on the serializer, as in RQ
        job.meta = {"unserialized": meta if meta is not None else {}}
        job._unreadable_meta = meta
    job.number_of_retries = _int(v) if (v := get(b"number_of_retries")) else None
    job.retries_left = _int(v) if (v := get(b"retries_left")) else None
    if v := get(b"retry_intervals"):
        job.retry_intervals = json.loads(v.decode())
    job.enqueue_at_front_on_retry = bool(_int(v)) if (v := get(b"enqueue_at_front_on_retry")) else False
    job.repeats_left = _int(v) if (v := get(b"repeats_left")) else None
    if v := get(b"repeat_intervals"):
        job.repeat_intervals = json.loads(v.decode())
    job.rate_limit_key = v.decode() if (v := get(b"rate_limit_key")) else None
    job.rate_limit_concurrency = _int(v) if (v := get(b"rate_limit_concurrency")) else None


def _callbacks(job: Job, data: dict[bytes, bytes]) -> None:
    for kind in ("success", "failure", "stopped"):
        name = data.get(f"{kind}_callback_name".encode())
        if name:
            setattr(job, f"_{kind}_callback_name", name.decode())
        timeout = data.get(f"{kind}_callback_timeout".encode())
        if timeout is not None:
            setattr(job, f"_{kind}_callback_timeout", _int(timeout))
