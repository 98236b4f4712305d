"""RQ jobs of queue ``probe``: the memory probes, run by a worker against the queue's Redis.

Each job takes one JSON object of parameters and returns a JSON object (the job's result).
The Redis comes from the worker (``rq.get_current_job().connection``).
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq import get_current_job

from shared.memory.fill import capacity, sweep, watch
from shared.memory.keys import probe_keys

logger = logging.getLogger(__name__)


def _redis() -> Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("probe jobs run inside an RQ worker")
    return job.connection


def probe_key(params: dict[str, Any]) -> dict[str, Any]:
    """Explain existing keys, or key/value pairs written into a scratch database."""
    pairs = [(str(p["key"]), str(p["value"])) for p in params.get("set", [])]
    rows = probe_keys(
        _redis(),
        keys=list(params.get("keys", [])),
        pairs=pairs,
        ttl=params.get("ttl"),
        scratch_db=int(params.get("scratch_db", 15)),
    )
    return {"keys": rows}


def probe_sweep(params: dict[str, Any]) -> dict[str, Any]:
    """Key or value lengths from ``start`` to ``stop`` in a scratch database."""
    rows = sweep(
        _redis(),
        what=str(params.get("what", "key")),
        start=int(params.get("start", 1)),
        stop=int(params.get("stop", 64)),
        scratch_db=int(params.get("scratch_db", 15)),
    )
    return {"what": params.get("what", "key"), "rows": rows}


def probe_capacity(params: dict[str, Any]) -> dict[str, Any]:
    """Predict the capacity of the queue's Redis for a key pattern (no fill: it is the queue's Redis)."""
    return capacity(
        _redis(),
        str(params["key_pattern"]),
        str(params["value"]),
        params.get("ttl"),
        maxmemory=params.get("maxmemory"),
        batch=params.get("batch"),
    )


def probe_watch(params: dict[str, Any]) -> dict[str, Any]:
    """``count`` samples of INFO memory, ``interval`` seconds apart, with warnings."""
    samples = list(watch(_redis(), float(params.get("interval", 1.0)), int(params.get("count", 1))))
    return {"samples": samples}
